/* Exact and near-exact DDIM inversion, each with its matching decoder:
 *
 *  - "fixed-point" (AIDI, Pan et al. ICCV 2023; ReNoise, Garibi et al.
 *    ECCV 2024): each inversion step solves z = (x - B eps(z, t)) / A, the
 *    exact inverse of ddim_sample's step at timestep t, by fixed-point
 *    iteration, Anderson-accelerated, until the relative residual
 *    |Phi(z) - z| / |Phi(z)| is below a tolerance or an iteration cap, and
 *    keeps Phi of the iterate with the smallest residual. The iteration
 *    starts from (x - B eps) / A with the eps of the previous step's
 *    solution (the first step from z = x_0, i.e. DDIM inversion with eps at
 *    the target). 1 model call per iteration. The latent is one state and
 *    its decoder is plain ddim_sample (eta 0).
 *  - "edict" (Wallace et al. CVPR 2023): two coupled sequences x, y with a
 *    mixing layer of weight p; per sampling step at t (A, B as above):
 *      x' = A x + B eps(y, t);  y' = A y + B eps(x', t);
 *      x'' = p x' + (1-p) y';   y'' = p y' + (1-p) x''
 *    and its algebraic inverse for inversion (2 model calls per step both
 *    ways). The latent is the pair (x_T, y_T); the decoder returns x_0.
 *  - "bdia" (Zhang, Lewis & Kleijn ECCV 2024): with D(z, a -> a') the DDIM
 *    update of z from level a to a' using eps(z, t) of z's own timestep,
 *      z_{i-1} = gamma z_{i+1} + D(z_i, t_i -> t_{i-1}) - gamma D(z_i, t_i -> t_{i+1}),
 *    whose inverse is z_{i+1} = (z_{i-1} - D(..->t_{i-1}) + gamma D(..->t_{i+1})) / gamma.
 *    Inversion: one plain DDIM inversion step from x_0 (eps where
 *    DdimRunOptions.eps_at says, as ddim_invert), then the inverse update;
 *    1 model call per step. The latent is the pair (z_T, z at the next
 *    lower sampling timestep); decoding runs the bidirectional update from
 *    that pair (steps - 1 model calls).
 *
 * EDICT and BDIA are exactly invertible in exact arithmetic: the state
 * arithmetic runs in double, the model in float32, and the latent is stored
 * in float32, so decode (invert (x)) == x up to float32 round-off.
 * Smaller p or gamma amplify round-off in inversion (by 1/p^2, resp.
 * 1/gamma, per step).
 *
 * All functions work on one image (batch 1), [C, H, W] floats, honour
 * DdimRunOptions' steps, spacing, progress (called once per step with
 * (step, steps)) and cancellable (DDIM_ERROR_CANCELLED); eta, seed,
 * clip_sample and trajectory are ignored (they are always deterministic,
 * eta 0, no clipping), and eps_at is used only by "ddim" and BDIA's first
 * inversion step. Timesteps and levels are exactly ddim_sample's (step i
 * goes from alphas(ts[i]) to alphas(ts[i] - T/steps)). */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/latent.h"
#include "ddim/optimize.h"
#include "ddim/sampler.h"
#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

typedef enum {
  DDIM_METHOD_DDIM,
  DDIM_METHOD_FIXED_POINT,
  DDIM_METHOD_EDICT,
  DDIM_METHOD_BDIA,
  /* Optimisation through the sampling chain (optimize.h), from a zero or
   * noise start, or from the DDIM inversion ("hybrid"). Decoded by DDIM. */
  DDIM_METHOD_OPTIMIZE,
  DDIM_METHOD_HYBRID,
  /* A learned encoder's x_T = E(x0) (encoder.h; one network pass, no
   * model evaluation). Decoded by DDIM. */
  DDIM_METHOD_ENCODER
} DdimInversionMethod;

#define DDIM_EDICT_P_DEFAULT 0.93
#define DDIM_BDIA_GAMMA_DEFAULT 0.96
#define DDIM_FIXED_POINT_MAX_ITERATIONS_DEFAULT 10
#define DDIM_FIXED_POINT_TOLERANCE_DEFAULT 1e-4
#define DDIM_FIXED_POINT_ANDERSON_WINDOW_DEFAULT 3
#define DDIM_FIXED_POINT_ANDERSON_WINDOW_MAX 8

/* "ddim", "fixed-point", "edict", "bdia", "optimize", "hybrid", "encoder". */
const char *ddim_inversion_method_to_string (DdimInversionMethod method);
/* A name not in that list is DDIM_ERROR_INVALID naming the valid ones. */
gboolean    ddim_inversion_method_from_string (const char *s, DdimInversionMethod *method,
                                               GError **error);
/* Whether the method's latent is a pair of states (EDICT, BDIA). */
gboolean    ddim_inversion_method_is_pair (DdimInversionMethod method);
/* The method whose decoder reads this method's latents: DDIM for DDIM,
 * fixed-point, optimize, hybrid and encoder, the method itself otherwise. */
DdimInversionMethod ddim_inversion_method_decoder (DdimInversionMethod method);

typedef struct {
  /* fixed-point: most model evaluations (iterations) per step, >= 1. */
  int    fp_max_iterations;
  /* fixed-point: stop a step once |Phi(z) - z| / |Phi(z)| (L2) is below
   * this (>= 0; 0 = always run fp_max_iterations). */
  double fp_tolerance;
  /* fixed-point: Anderson acceleration window, 0 (plain fixed-point
   * iteration) .. DDIM_FIXED_POINT_ANDERSON_WINDOW_MAX. */
  int    fp_anderson_window;
  /* edict: mixing weight p, 0 < p <= 1. */
  double edict_p;
  /* bdia: gamma, 0 < gamma <= 1 (gamma 0 would be plain DDIM, which BDIA
   * cannot invert). */
  double bdia_gamma;
  /* optimize / hybrid: the optimisation settings (NULL: defaults). For
   * "optimize" an init of DDIM_OPTIMIZE_INIT_DDIM means noise; "hybrid"
   * always starts from the DDIM inversion unless the init is GIVEN. */
  const DdimOptimizeOptions *optimize;
  /* the start for an init of DDIM_OPTIMIZE_INIT_GIVEN (e.g. an encoder's
   * output), [C, H, W]. */
  const float *optimize_start;
  /* encoder: the learned encoder (encoder.h), required by that method.
   * hybrid: when set (and the init is not GIVEN), the optimisation starts
   * from its output instead of the DDIM inversion. NULL: none. */
  const struct _DdimEncoder *encoder;
} DdimExactOptions;

/* Defaults: 10 iterations, tolerance 1e-4, Anderson window 3, p = 0.93,
 * gamma = 0.96. */
void     ddim_exact_options_init (DdimExactOptions *options);
/* Checks the ranges above; DDIM_ERROR_INVALID naming the option otherwise. */
gboolean ddim_exact_options_check (const DdimExactOptions *options, GError **error);

/* What a run cost; every function below adds to it (zero it first). */
typedef struct {
  int    model_evals;         /* UNet forward passes */
  int    fp_steps;            /* fixed-point: inversion steps run */
  int    fp_steps_converged;  /* fixed-point: steps that met the tolerance */
  double fp_max_residual;     /* fixed-point: largest final relative residual */
} DdimExactStats;

/* x: in x_0, out x_T. @stats may be NULL. */
gboolean ddim_invert_fixed_point (DdimUNet *unet, const DdimSchedule *schedule, float *x,
                                  int height, int width, const DdimExactOptions *exact,
                                  const DdimRunOptions *options, DdimExactStats *stats,
                                  GError **error);

/* x0 -> (x_T, y_T). @x_out or @y_out may alias @x0. */
gboolean ddim_invert_edict (DdimUNet *unet, const DdimSchedule *schedule, const float *x0,
                            float *x_out, float *y_out, int height, int width, double p,
                            const DdimRunOptions *options, DdimExactStats *stats,
                            GError **error);
/* (x_T, y_T) -> x_0 (the x sequence). @x0_out may alias an input. */
gboolean ddim_decode_edict (DdimUNet *unet, const DdimSchedule *schedule, const float *x_T,
                            const float *y_T, float *x0_out, int height, int width, double p,
                            const DdimRunOptions *options, DdimExactStats *stats,
                            GError **error);

/* x0 -> (z_T, z_pair), z_pair being the state at the next lower sampling
 * timestep (for steps == 1, x0 itself). Outputs may alias @x0. */
gboolean ddim_invert_bdia (DdimUNet *unet, const DdimSchedule *schedule, const float *x0,
                           float *z_out, float *z_pair_out, int height, int width, double gamma,
                           const DdimRunOptions *options, DdimExactStats *stats,
                           GError **error);
gboolean ddim_decode_bdia (DdimUNet *unet, const DdimSchedule *schedule, const float *z_T,
                           const float *z_pair, float *x0_out, int height, int width,
                           double gamma, const DdimRunOptions *options, DdimExactStats *stats,
                           GError **error);

/* Inverts @x0 ([C, H, W], C = the model's channels) with @method and returns
 * a new latent with latent (and latent_pair for pair methods), method,
 * steps, spacing, eps_at (TARGET for fixed-point and EDICT, which evaluate
 * eps at the step's sampling timestep) and edict_p / bdia_gamma filled in;
 * image_width/height are @width/@height, resize "fit", model_sha256 NULL:
 * the caller sets those. @exact may be NULL (defaults). For DDIM this is
 * ddim_invert with @options (its trajectory included). "encoder" needs
 * exact->encoder (DDIM_ERROR_INVALID without one), trained for @options'
 * steps and spacing and the model's channels (DDIM_ERROR_MISMATCH
 * otherwise); its latent has eps_at @options->eps_at (unused by its
 * decoder). */
DdimLatent *ddim_invert_with_method (DdimUNet *unet, const DdimSchedule *schedule,
                                     const float *x0, int height, int width,
                                     DdimInversionMethod method, const DdimExactOptions *exact,
                                     const DdimRunOptions *options, DdimExactStats *stats,
                                     GError **error);

/* The latent's method. An unknown name is DDIM_ERROR_UNSUPPORTED. */
gboolean ddim_latent_get_method (const DdimLatent *latent, DdimInversionMethod *method,
                                 GError **error);
/* Whether the decoder of @expected can read @latent: the methods' decoders
 * must be the same (a fixed-point latent is a DDIM latent), otherwise
 * DDIM_ERROR_MISMATCH "latent was made with method 'edict'; the 'ddim'
 * decoder cannot read it". An unknown method is DDIM_ERROR_UNSUPPORTED; a
 * pair method's latent without latent_pair or a valid edict_p / bdia_gamma
 * is DDIM_ERROR_FORMAT. */
gboolean ddim_latent_check_method (const DdimLatent *latent, DdimInversionMethod expected,
                                   GError **error);

/* Decodes @latent with the decoder its method names, with the latent's
 * steps and spacing (those of @options are ignored; @options may be NULL,
 * otherwise its progress and cancellable are used). DDIM and fixed-point:
 * ddim_sample with eta 0 and no clipping. @x0_out: channels*height*width
 * floats. A latent whose channels are not the model's is
 * DDIM_ERROR_MISMATCH. */
gboolean ddim_reconstruct_latent (DdimUNet *unet, const DdimSchedule *schedule,
                                  const DdimLatent *latent, float *x0_out,
                                  const DdimRunOptions *options, DdimExactStats *stats,
                                  GError **error);

G_END_DECLS
