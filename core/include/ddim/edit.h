/* Semantic editing during DDIM sampling.
 *
 * h-space (Asyrp, Kwon et al. ICLR 2023): over the edit interval, the steps
 * whose timestep t is in [t_edit, T], the mid-block output h is shifted by
 * dh and each step is asymmetric,
 *   x_{t-1} = sqrt(a_{t-1}) P_t(eps(x_t | h + dh)) + sqrt(1 - a_{t-1}) eps(x_t),
 * the predicted x0 from the shifted pass, the direction term from the
 * plain one (the encoder half runs once per step, its skips reused for both
 * decoder passes); below t_edit plain DDIM runs.
 * x-space (Park et al. NeurIPS 2023): x_t += dx at the first sampling step
 * whose timestep is at or below t_edit (the last step if none is), then
 * plain DDIM.
 *
 * Strength 0 (or a NULL displacement) runs no shifted pass: the result is
 * ddim_sample's with eta 0, bit for bit. All functions take the latent x_T
 * [n, C, H, W] in @x and leave the edited x_0 there; they use @options'
 * steps, spacing, clip_sample, trajectory, progress (one call per step) and
 * cancellable; eta must be 0. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/directions.h"
#include "ddim/exact.h"
#include "ddim/latent.h"
#include "ddim/sampler.h"
#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

/* What an edit cost; the functions that take one add to it (zero it
 * first; NULL: not counted). A batched model call counts once. */
typedef struct {
  int model_evals;       /* UNet forward passes */
  int shifted_decoders;  /* extra decoder halves of h-shifted steps (each
                          * about half a forward pass) */
} DdimEditStats;

/* The edit timestep used when none is given: the direction's t_min (space
 * h: its fitting interval starts there; a Jacobian direction's only
 * timestep) or t_max for space x, else num_train_timesteps / 2. */
int      ddim_edit_default_t_edit (const DdimDirection *direction, const DdimSchedule *schedule);

/* Edits with @direction at @strength (finite; NaN or infinity is
 * DDIM_ERROR_INVALID); a per-timestep direction shifts h at each step by
 * its displacement at that step's timestep (ddim_direction_expand).
 * @t_edit < 0: the default above; otherwise it must be below
 * num_train_timesteps. The direction's shape must fit the model at
 * @height x @width (ddim_direction_check, without the model hash). */
gboolean ddim_edit (DdimUNet *unet, const DdimSchedule *schedule, float *x, int n, int height,
                    int width, const DdimDirection *direction, double strength, int t_edit,
                    const DdimRunOptions *options, GError **error);

/* ddim_edit, adding its model calls to @stats (may be NULL). */
gboolean ddim_edit_counted (DdimUNet *unet, const DdimSchedule *schedule, float *x, int n,
                            int height, int width, const DdimDirection *direction,
                            double strength, int t_edit, const DdimRunOptions *options,
                            DdimEditStats *stats, GError **error);

/* h-space edit with an explicit displacement @dh [C_mid, h, w] (the same
 * for every sample; NULL: none) over [@t_edit, T]. */
gboolean ddim_edit_hspace (DdimUNet *unet, const DdimSchedule *schedule, float *x, int n,
                           int height, int width, const float *dh, int t_edit,
                           const DdimRunOptions *options, GError **error);

/* x-space edit with an explicit displacement @dx [C, H, W] (the same for
 * every sample; NULL: none) at @t_edit. */
gboolean ddim_edit_xspace (DdimUNet *unet, const DdimSchedule *schedule, float *x, int n,
                           int height, int width, const float *dx, int t_edit,
                           const DdimRunOptions *options, GError **error);

/* Semantic editing of exactly invertible BDIA latents (ddim/exact.h): the
 * edit runs inside BDIA's bidirectional decoder. With D(z, a -> a') the
 * Asyrp step of the direction's h shift (the predicted x0 from the
 * shifted pass, eps from the plain one, as above), each decoding step is
 *   z_{i+1} = gamma z_{i-1} + D(z_i, t_i -> t_{i+1}) - gamma D(z_i, t_i -> t_{i-1})
 * for the steps with t_i >= @t_edit, plain BDIA below (gamma 0 would be
 * the DDIM edit above). The first sampling timestep has no model call in
 * BDIA decoding (the latent pair already holds its result), so h is shifted
 * from the second one on. An x-space direction adds its displacement to
 * both states of the pair at the step of @t_edit (at the second step at the
 * earliest).
 * @x: in z_T [n, C, H, W], out the edited x_0; @z_pair: the latents' second
 * states, [n, C, H, W]; @gamma in (0, 1]. Strength 0 runs exactly
 * ddim_decode_bdia's arithmetic, so it returns the inverted image to
 * float32 round-off (bit for bit for n = 1). @options: steps, spacing,
 * progress (steps - 1 calls), cancellable; eta must be 0; clip_sample and
 * trajectory are ignored. Otherwise as ddim_edit.
 * The x0 shift of a shifted step moves both states of the pair (each by
 * sqrt(alpha) of its level), so that the next step's backward term does
 * not undo it. Even so BDIA's two-step recurrence amplifies any change of
 * the trajectory: on the default model a strength of 1/1000 of a class
 * direction's already costs the background 44 dB, and at the recommended
 * strengths the background PSNR is 23 dB against DDIM's 38 (MODEL.md,
 * "Edit speed"); it is there for measurement, not the default. */
gboolean ddim_edit_bdia (DdimUNet *unet, const DdimSchedule *schedule, float *x,
                         const float *z_pair, int n, int height, int width, double gamma,
                         const DdimDirection *direction, double strength, int t_edit,
                         const DdimRunOptions *options, DdimEditStats *stats, GError **error);

/* Which decoder edits a latent. */
typedef enum {
  /* The decoder of the latent's method: BDIA latents with ddim_edit_bdia
   * (exact: no reconstruction pass), the others with DDIM. */
  DDIM_EDIT_DECODER_OWN,
  /* DDIM for every latent, a pair method's from its first state (then only
   * the difference of two such decodings is a consistent edit). */
  DDIM_EDIT_DECODER_DDIM
} DdimEditDecoder;

/* Edits @latent (from ddim_invert_with_method; its steps and spacing are
 * used, those of @options ignored, @options may be NULL or give progress
 * and cancellable) with @decoder, writing x_0 [C, H, W] to @x0_out:
 * ddim_edit, or ddim_edit_bdia for BDIA latents with DDIM_EDIT_DECODER_OWN.
 * EDICT latents are always edited as DDIM latents of their first state
 * (EDICT has no h-space edit), which is a consistent edit only as the
 * difference of two such decodings (ddim_edit_change does that). A latent
 * whose channels are not the model's is DDIM_ERROR_MISMATCH. */
gboolean ddim_edit_latent (DdimUNet *unet, const DdimSchedule *schedule, const DdimLatent *latent,
                           DdimEditDecoder decoder, const DdimDirection *direction,
                           double strength, int t_edit,
                           const DdimRunOptions *options, float *x0_out, DdimEditStats *stats,
                           GError **error);

/* Whether decoding @latent gives back the image it was inverted from (to
 * float32 round-off): BDIA latents. Their edits need no reconstruction
 * pass. */
gboolean ddim_edit_latent_is_exact (const DdimLatent *latent);

/* The change an edit makes, @change_out = edited - reconstructed, [C, H, W]
 * at the latent's size: what a detail-keeping editor adds to the original
 * picture. With @reconstruct the plain reconstruction is decoded too,
 * the same way (@source unused, may be NULL), except for an exact latent
 * (ddim_edit_latent_is_exact) in its own decoder, whose reconstruction is
 * @source, the model input that was inverted. Without @reconstruct the
 * source stands for the reconstruction whatever the latent: edited -
 * source, the edit's own result at the model's resolution, with what the
 * inversion lost. Without a reconstruction pass this costs one edit
 * decoding and nothing more; @source must then be given. Strength 0: all
 * zeros, no model call. Progress (with @options) counts the decoding steps
 * of all passes. */
gboolean ddim_edit_change (DdimUNet *unet, const DdimSchedule *schedule, const DdimLatent *latent,
                           DdimEditDecoder decoder, gboolean reconstruct, const float *source,
                           const DdimDirection *direction, double strength,
                           int t_edit, const DdimRunOptions *options, float *change_out,
                           DdimEditStats *stats, GError **error);

/* The Semantic edit settings the GIMP plug-in uses by default, from the
 * measurements of the default model (models/fashion-mnist-32/MODEL.md,
 * "Edit speed"): its own inversion (when no latent is reused) with
 * @method at @steps, the edit decoded with @decoder, and the change
 * (ddim_edit_change) with or without a reconstruction pass. */
typedef struct {
  DdimInversionMethod method;
  int                 steps;
  DdimEditDecoder     decoder;      /* for latents it inverts and latents it reuses */
  gboolean            reconstruct;  /* for ddim_edit_change */
} DdimEditDefaults;

void ddim_edit_defaults (DdimEditDefaults *defaults);

G_END_DECLS
