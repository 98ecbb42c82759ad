/* Optimisation-based inversion: find the latent z whose K-step DDIM
 * decoding G_K(z) reproduces an image x, by gradient descent through the
 * whole sampling chain (DEQ-DDIM, Pokle et al. 2022; DOODL, Wallace et al.
 * 2023), minimising
 *     mean((G_K(z) - x)^2) + prior_weight * (|z|^2 / d - 1)^2
 * (the second term keeps z on the Gaussian shell |z|^2 ~ d where DDIM
 * latents live). Adam on z. Memory is O(K) latents: the forward stores the
 * K step inputs only, and each step's activations are recomputed during the
 * backward pass. The decoder of the result is plain DDIM sampling (eta 0,
 * no clipping) with the same steps and spacing. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/sampler.h"
#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

typedef enum {
  DDIM_OPTIMIZE_INIT_ZERO,    /* z = 0 */
  DDIM_OPTIMIZE_INIT_NOISE,   /* z ~ N(0, I) from the seed */
  DDIM_OPTIMIZE_INIT_DDIM,    /* z = DDIM inversion of x ("hybrid") */
  DDIM_OPTIMIZE_INIT_GIVEN    /* z as passed in (e.g. from an encoder) */
} DdimOptimizeInit;

/* Called after each iteration with the loss (reconstruction MSE on the
 * [-1, 1] scale, prior excluded) and the reconstruction PSNR in dB. */
typedef void (*DdimOptimizeProgressFunc) (int iteration, int total, double mse, double psnr,
                                          gpointer user_data);

typedef struct {
  int                      iterations;     /* >= 0 */
  double                   learning_rate;  /* Adam step size */
  double                   prior_weight;   /* >= 0 */
  DdimOptimizeInit         init;
  guint64                  seed;           /* for DDIM_OPTIMIZE_INIT_NOISE */
  DdimOptimizeProgressFunc progress;
  gpointer                 progress_data;
  GCancellable            *cancellable;
} DdimOptimizeOptions;

/* Defaults: 100 iterations, learning rate 0.01, prior weight 0.01,
 * DDIM initialisation, seed 0. */
void ddim_optimize_options_init (DdimOptimizeOptions *options);

typedef struct {
  double initial_mse, final_mse;   /* reconstruction MSE at the start and the end */
  double final_psnr;               /* dB, [0,1] scale */
  int    model_evals;              /* forward passes (a VJP counts as one) */
  int    model_vjps;
} DdimOptimizeStats;

/* x0: the target image [1, C, H, W] in [-1, 1]. z: receives the latent (and
 * holds the start for DDIM_OPTIMIZE_INIT_GIVEN). @ddim gives steps and
 * spacing (and, for the DDIM start, eps_at), progress of the DDIM start,
 * and is otherwise unused. The best z seen (lowest loss) is returned.
 * @stats may be NULL. */
gboolean ddim_invert_optimize (DdimUNet *unet, const DdimSchedule *schedule, const float *x0,
                               float *z, int height, int width, const DdimRunOptions *ddim,
                               const DdimOptimizeOptions *options, DdimOptimizeStats *stats,
                               GError **error);

/* Gradient of sum(w * G_K(z)) with respect to z, G_K being the
 * deterministic K-step DDIM decoding (@ddim's steps and spacing) of one
 * latent z [1, C, H, W]. @x0 receives G_K(z) when not NULL. Memory: K + 1
 * latents plus one step's activations. */
gboolean ddim_decode_vjp (DdimUNet *unet, const DdimSchedule *schedule, const float *z,
                          int height, int width, const DdimRunOptions *ddim, const float *w,
                          float *x0, float *grad_z, GError **error);

G_END_DECLS
