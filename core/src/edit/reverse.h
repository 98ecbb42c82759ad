/* The reverse (sampling) process with hooks, shared by the editor, the
 * direction fitting, PCA and interpolation. Internal to libddim.
 *
 * Every step is deterministic DDIM (eta 0) and computes exactly what
 * ddim_sample computes; a step the hooks leave alone gives the same bits.
 * A shifted step is Asyrp's asymmetric step: the predicted x0 from the
 * output with h shifted, the direction term (eps) from the plain output,
 *   x_prev = sqrt(a_prev) P_t(eps(x_t | h + dh)) + sqrt(1 - a_prev) eps(x_t),
 * the encoder half running once for both (ddim_unet_run_pair). */
#pragma once

#include "ddim/edit.h"
#include "ddim/sampler.h"

G_BEGIN_DECLS

typedef struct {
  /* Before step @step's model call: may change x_t (x-space edits). */
  void     (*before) (int step, int t, float *x, gsize count, gpointer data);
  /* Whether step @step is shifted; then @shift gets a copy of h to change
   * in place. */
  gboolean (*wants_shift) (int step, int t, gpointer data);
  void     (*shift) (int step, int t, float *h, gsize count, gpointer data);
  /* Whether @observe wants h of step @step; NULL: every step. */
  gboolean (*wants_h) (int step, int t, gpointer data);
  /* h (unshifted) of step @step, [n, C_mid, h, w]. */
  void     (*observe) (int step, int t, const float *h, gsize count, gpointer data);
  gpointer data;
  /* > 0: stop after this many steps (x is then x_t, not x_0). */
  int      max_steps;
  /* When set, the model calls are added to it. */
  DdimEditStats *stats;
} DdimReverseHooks;

/* x: in x_T [n, C, H, W], out x_0. Uses @options' steps, spacing,
 * clip_sample, trajectory and cancellable; eta must be 0. Progress is
 * reported as (@progress_done + steps done, @progress_total) so that
 * callers running several passes report one count (@progress_total 0:
 * steps). @hooks may be NULL (then this is ddim_sample with eta 0). */
gboolean ddim_reverse_run (DdimUNet *unet, const DdimSchedule *schedule, float *x, int n,
                           int height, int width, const DdimRunOptions *options,
                           const DdimReverseHooks *hooks, int progress_done, int progress_total,
                           GError **error);

/* The same with BDIA's bidirectional decoder (ddim/exact.h,
 * ddim_edit_bdia): x in z_T, @z_pair the second states, both [n, C, H, W];
 * out x_0. Shifted steps are Asyrp's asymmetric D in both of BDIA's DDIM
 * updates. @before gets a zeroed buffer of n*C*H*W floats at each step
 * with a model call (step >= 1); what it leaves there is added to both
 * states of the pair. observe, wants_h and max_steps are not supported
 * (must be NULL/0); clip_sample and trajectory are ignored. The states are
 * kept in double and, with no hook acting, the arithmetic is
 * ddim_decode_bdia's. Progress: (progress_done + i, progress_total or
 * steps - 1) after decoding step i. */
gboolean ddim_reverse_run_bdia (DdimUNet *unet, const DdimSchedule *schedule, float *x,
                                const float *z_pair, int n, int height, int width, double gamma,
                                const DdimRunOptions *options, const DdimReverseHooks *hooks,
                                int progress_done, int progress_total, GError **error);

/* Checks the model can run DDIM (in == out channels) at that size. */
gboolean ddim_reverse_check (DdimUNet *unet, int height, int width, GError **error);

/* Index of the sampling step whose timestep is the first at or below @t
 * (the last step when every timestep is above @t). */
int ddim_reverse_step_at (const int *timesteps, int steps, int t);

/* Forwards the progress of one pass of a longer job: a DdimProgressFunc
 * whose data is the relay, reporting (done + pass's done, total). */
typedef struct {
  DdimProgressFunc func;
  gpointer         data;
  int              done, total;
} DdimProgressRelay;

void ddim_progress_relay (int done, int total, gpointer relay);

/* @o with its progress routed through @relay (set up for @done of @total). */
void ddim_run_options_relay (const DdimRunOptions *o, DdimProgressRelay *relay, int done,
                             int total, DdimRunOptions *out);

G_END_DECLS
