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
#include "ddim/sampler.h"
#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

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

G_END_DECLS
