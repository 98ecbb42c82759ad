/* Unsupervised directions.
 *
 * Jacobian (Park et al., "Understanding the latent space of diffusion
 * models through the lens of Riemannian geometry", NeurIPS 2023): at one
 * noisy image x_t and timestep t, the top-k right singular vectors v_i of
 * J = dh/dx_t (h the mid-block output), by subspace power iteration with
 * Rayleigh-Ritz: U = J V by forward-mode differentiation
 * (ddim_unet_hspace_jvp), V <- orth(J^T U) (ddim_unet_hspace_vjp). The
 * v_i are orthonormal; sigma_i are the singular values and u_i = J v_i /
 * sigma_i the left singular vectors. This is SeFa's closed form (Shen &
 * Zhou, CVPR 2021) with the local Jacobian in place of the first layer.
 * A v_i is an x-space direction (edit: x_t + g v_i at t, then plain DDIM);
 * u_i is the h-space direction the same displacement causes (edit: dh =
 * g u_i over [t, T], Asyrp's asymmetric step). Both are local to the image
 * they were computed on.
 *
 * PCA (the global variant): principal components of h over many samples,
 * collected along their sampling trajectories at every sampling step with
 * t in [t_min, t_max]; h is centred per timestep (so that the drift of h
 * with t does not become the first component) and the components are
 * pooled over the interval. Memory: n * (steps in the interval) h-space
 * tensors. PCA iterations cost no model calls: at least 100 are run.
 *
 * Names (1-based N): Jacobian PREFIX-N (x-space) and PREFIX-N-h (h-space),
 * PREFIX "component" by default; PCA PREFIX-N, PREFIX "pca" by default (so
 * that a per-image discovery merged into a model's file does not replace
 * its shipped components). Either is also editable as "component-N", the
 * N-th unsupervised or PCA direction of a file, when no direction has that
 * exact name (ddim_direction_set_lookup). Recommended strengths: Jacobian x,
 * +-sqrt(C*H*W)/4 (a quarter of the norm of x_t); Jacobian h, that times
 * sigma_i; PCA, +-2 standard deviations. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/directions.h"
#include "ddim/sampler.h"
#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

typedef struct {
  int              k;             /* components, >= 1 */
  int              iterations;    /* at most; >= 1 */
  double           tolerance;     /* stop when no sigma moved by more than this, relatively */
  guint64          seed;          /* the starting subspace */
  gboolean         want_x;        /* Jacobian: make the x-space directions */
  gboolean         want_h;        /* Jacobian: make the h-space directions */
  const char      *prefix;        /* NULL: "component" (Jacobian), "pca" (PCA) */
  const char      *model_sha256;  /* recorded; may be NULL */
  DdimProgressFunc progress;      /* (done, total) over all model passes */
  gpointer         progress_data;
  GCancellable    *cancellable;
} DdimDiscoverOptions;

/* Defaults: k 4, 30 iterations, tolerance 1e-4, seed 0, both spaces. */
void ddim_discover_options_init (DdimDiscoverOptions *options);

/* The raw decomposition at @x_t [1, C, H, W], timestep @t: @v [k, C, H, W]
 * (orthonormal rows), @u [k, C_mid, h, w] (may be NULL), @sigma [k]
 * descending. @iterations_run (may be NULL) receives the iterations made.
 * k must not exceed C*H*W. */
gboolean ddim_jacobian_svd (DdimUNet *unet, const float *x_t, int height, int width, int t,
                            const DdimDiscoverOptions *options, float *v, float *u,
                            double *sigma, int *iterations_run, GError **error);

/* The same as directions (kind unsupervised, t_min = t_max = @t). */
DdimDirectionSet *ddim_discover_jacobian (DdimUNet *unet, const float *x_t, int height,
                                          int width, int t, const DdimDiscoverOptions *options,
                                          GError **error);

/* x (an image x_0 [1, C, H, W]) -> x_t by DDIM inversion with @run's steps,
 * spacing and eps_at, up to the sampling timestep the editor would use for
 * @t (the first sampling timestep at or below it); @t_reached receives it. */
gboolean ddim_invert_to_timestep (DdimUNet *unet, const DdimSchedule *schedule, float *x,
                                  int height, int width, const DdimRunOptions *run, int t,
                                  int *t_reached, GError **error);

/* PCA of h over the sampling trajectories of @latents [n, C, H, W] (x_T)
 * with @run's steps and spacing (eta 0), h taken at the steps with t in
 * [@t_min, @t_max] (< 0: num_train_timesteps / 2 and num_train_timesteps -
 * 1); @pool_space gives [C_mid] components. Kind pca, space h. */
DdimDirectionSet *ddim_discover_pca (DdimUNet *unet, const DdimSchedule *schedule,
                                     const float *latents, int n, int height, int width,
                                     const DdimRunOptions *run, int t_min, int t_max,
                                     gboolean pool_space, const DdimDiscoverOptions *options,
                                     GError **error);

G_END_DECLS
