/* Interpolation between two images through their latents.
 *
 * Frames are decoded with deterministic DDIM from spherical interpolations
 * of the two latents x_T (DDIM paper, App. D.5): Gaussian latents live near
 * a sphere, where linear interpolation would pass through low-norm latents
 * the model never saw. Optionally h is interpolated too: over the edit
 * interval [t_edit, T], each inner frame's h is replaced by the linear
 * interpolation of the two ends' h at the same step (a delta of lerp - h
 * through Asyrp's asymmetric step, see ddim/edit.h). The first and last
 * frames are the two latents' plain reconstructions, bit for bit. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/sampler.h"
#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

typedef struct {
  /* Decoding: steps, spacing, clip_sample (eta must be 0); progress counts
   * steps over all frames (done, total); cancellable. */
  DdimRunOptions run;
  gboolean       hspace;   /* interpolate h as well */
  int            t_edit;   /* start of h interpolation; < 0: num_train_timesteps / 2 */
} DdimInterpolateOptions;

void     ddim_interpolate_options_init (DdimInterpolateOptions *options,
                                        const DdimSchedule *schedule);

/* out = sin((1-alpha) theta)/sin(theta) a + sin(alpha theta)/sin(theta) b,
 * theta the angle between @a and @b (linear interpolation when they are
 * nearly parallel). alpha 0 gives @a and 1 gives @b exactly. */
void     ddim_slerp (const float *a, const float *b, gsize count, double alpha, float *out);

/* @n_frames >= 2 frames at alpha = i / (n_frames - 1) between the latents
 * @a and @b [1, C, H, W]: @frames [n_frames, C, H, W] receives the decoded
 * images, @latents (may be NULL) the interpolated latents. */
gboolean ddim_interpolate (DdimUNet *unet, const DdimSchedule *schedule, const float *a,
                           const float *b, int height, int width, int n_frames,
                           const DdimInterpolateOptions *options, float *latents, float *frames,
                           GError **error);

G_END_DECLS
