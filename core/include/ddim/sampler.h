/* Deterministic DDIM sampling (eta = 0), stochastic DDIM (eta > 0, seeded)
 * and DDIM inversion, as diffusers' DDIMScheduler and DDIMInverseScheduler
 * step them. Every call reports progress and honours a GCancellable. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

/* Where inversion evaluates the noise prediction when moving from level
 * t_cur to t_next = t_cur + T/steps:
 *  - CURRENT: at t_cur, the step's starting timestep. This is what
 *    diffusers' DDIMInverseScheduler pipelines do (the model is called with
 *    the scheduler's inverse timesteps, which start at -T/steps), and what
 *    ermongroup/ddim and Asyrp do; it reproduces the diffusers fixtures.
 *  - TARGET: at t_next, the level being moved to. */
typedef enum {
  DDIM_EPS_AT_TARGET,
  DDIM_EPS_AT_CURRENT
} DdimEpsAt;

/* Called after each model evaluation with the number done and the total. */
typedef void (*DdimProgressFunc) (int done, int total, gpointer user_data);

typedef struct {
  int              steps;          /* number of DDIM steps (>= 1) */
  DdimSpacing      spacing;
  double           eta;            /* sampling only; 0 = deterministic */
  guint64          seed;           /* noise for eta > 0 */
  gboolean         clip_sample;    /* clip predicted x0 to +-clip_sample_range */
  DdimEpsAt        eps_at;         /* inversion only */
  DdimProgressFunc progress;
  gpointer         progress_data;
  GCancellable    *cancellable;
  /* Optional: receives steps + 1 states of n*C*H*W floats, the input first
   * (caller-allocated). */
  float           *trajectory;
} DdimRunOptions;

/* Defaults: 50 steps, the schedule's spacing, eta 0, no clipping, eps at
 * the current timestep (as diffusers), no progress, no cancellable. */
void ddim_run_options_init (DdimRunOptions *options, const DdimSchedule *schedule);

/* x: in x_T (noise level of the first timestep), out x_0. [n, C, H, W]. */
gboolean ddim_sample (DdimUNet *unet, const DdimSchedule *schedule, float *x, int n,
                      int height, int width, const DdimRunOptions *options, GError **error);

/* x: in x_0, out x_T (the level of the last timestep). Same timesteps as
 * ddim_sample with the same steps and spacing, walked upwards. */
gboolean ddim_invert (DdimUNet *unet, const DdimSchedule *schedule, float *x, int n,
                      int height, int width, const DdimRunOptions *options, GError **error);

/* The (x0, eps) pair implied by a model output at cumulative alpha @alpha
 * for the schedule's prediction type. Arrays of @count floats; @x0 or @eps
 * may be NULL. */
void ddim_model_output_to_x0_eps (DdimPrediction prediction, float alpha, const float *x,
                                  const float *output, gsize count, float *x0, float *eps);

/* Standard normal floats from a seeded generator (deterministic). */
void ddim_randn (guint64 seed, float *out, gsize count);

G_END_DECLS
