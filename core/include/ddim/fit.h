/* Supervised h-space directions from examples (the API the GIMP plug-in
 * uses to fit a direction from two sets of layers).
 *
 * Each example, an image x_0 (inverted first with ddim_invert) or a latent
 * x_T, is sampled back with DDIM; h, the mid-block output, is collected at
 * every sampling step whose timestep lies in [t_min, t_max] and averaged
 * over those steps: one feature per example. The direction is pooled over
 * the interval rather than one per timestep, since the editor applies one
 * dh over its whole interval (Asyrp's global direction), and it keeps the
 * file one tensor per direction. With pool_space the feature is further
 * averaged over positions, giving a [C_mid] direction that is broadcast
 * over space and works at any image size.
 *
 * Methods:
 *  - mean difference: d = mean(positives) - mean(negatives), direction
 *    d / |d|; sigma = |d| (a strength of sigma moves the negatives' mean
 *    onto the positives');
 *  - prototype: as the mean difference, with the positives' mean replaced
 *    by the one positive example nearest to it: d = f(p) - mean(negatives).
 *    A mean of many examples blurs the fine features a class is told by
 *    (a shirt's buttons and collar, a coat's zip); one typical example
 *    keeps them, and edits take them on (the default model's class
 *    directions, per timestep from t = 150: shirt edits 4% -> 81%
 *    success, coat 29% -> 78%, mean 71.5% -> 85.7%; its MODEL.md);
 *  - logistic: the normal of a linear boundary (BoundaryDiffusion, Zhu et
 *    al. NeurIPS 2023) by L2-regularised logistic regression on the
 *    features (centred, scaled to unit RMS, classes weighted equally),
 *    oriented from negatives to positives; sigma = the gap between the
 *    class means along it.
 * Whatever the method, the direction has unit norm, points from the negatives to the
 * positives, and its recommended strength range is [-2 sigma, 2 sigma].
 *
 * Per timestep (options->per_timestep), the feature is h at each sampling
 * step of the interval, side by side, and the direction is found the same
 * way in that space; it is then scaled so that its blocks' RMS norm is 1
 * (sigma divided likewise), which for the mean difference makes strength
 * sigma move the negatives' mean h onto the positives' at every step.
 * On the default model this doubled the class edits' success (eval-edit,
 * 36 images per class: 47.6% pooled, 72.9% per timestep from t = 300). */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/directions.h"
#include "ddim/sampler.h"
#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

typedef enum {
  DDIM_FIT_MEAN_DIFFERENCE,
  DDIM_FIT_LOGISTIC,
  DDIM_FIT_PROTOTYPE
} DdimFitMethod;

typedef struct {
  /* Inversion and sampling: steps, spacing, eps_at (eta must be 0);
   * progress counts every model call of the fit as one (done, total);
   * cancellable. */
  DdimRunOptions run;
  gboolean       latents;      /* inputs are latents x_T, not images x_0 */
  int            t_min, t_max; /* < 0: num_train_timesteps / 2, num_train_timesteps - 1 */
  gboolean       pool_space;
  /* One block per sampling step in [t_min, t_max] (a per-timestep
   * direction, see ddim/directions.h) instead of h averaged over them;
   * needs at least 2 such steps. */
  gboolean       per_timestep;
  DdimFitMethod  method;
  double         l2;           /* logistic: weight of |w|^2 / 2; default 1e-3 */
  int            iterations;   /* logistic: gradient steps; default 500 */
  const char    *description;  /* recorded; may be NULL */
  const char    *model_sha256; /* recorded; may be NULL */
} DdimFitOptions;

/* Defaults: 50 steps and the schedule's spacing (ddim_run_options_init),
 * images, the default interval, full [C_mid, h, w] directions, mean
 * difference. */
void           ddim_fit_options_init (DdimFitOptions *options, const DdimSchedule *schedule);

/* @positives [n_positive, C, H, W] and @negatives [n_negative, C, H, W]
 * (images in [-1, 1], or latents): the direction @name (see above). Errors:
 * an empty set, an interval without a sampling step, identical class means
 * (DDIM_ERROR_INVALID); a bad size; cancellation. */
DdimDirection *ddim_fit_direction (DdimUNet *unet, const DdimSchedule *schedule, const char *name,
                                   const float *positives, int n_positive,
                                   const float *negatives, int n_negative, int height, int width,
                                   const DdimFitOptions *options, GError **error);

/* One direction per class of a labelled set ("toward sneaker", ...):
 * @images [n, C, H, W] (images, or latents with options->latents) with
 * @labels (n values in 0..@n_classes-1). Each example's feature is
 * collected once, as above; direction k takes the examples of class k as
 * positives and those of every other class as negatives, each other class
 * weighing the same whatever its count (mean difference: the negatives'
 * mean is the mean of their class means; logistic: each side's weight is
 * split equally among its classes). Class k is fitted when @names[k] is
 * not NULL (a valid direction name), with @descriptions[k] (the array or
 * an entry may be NULL); the classes not fitted still serve as negatives.
 * options->description is ignored. Returns the directions in class order.
 * Errors: fewer than 2 classes, a label out of range, a class without
 * examples, no class to fit (DDIM_ERROR_INVALID); those of
 * ddim_fit_direction. Progress counts every model call of the whole set. */
DdimDirectionSet *ddim_fit_class_directions (DdimUNet *unet, const DdimSchedule *schedule,
                                             const float *images, const int *labels, int n,
                                             int n_classes, const char *const *names,
                                             const char *const *descriptions, int height,
                                             int width, const DdimFitOptions *options,
                                             GError **error);

const char *ddim_fit_method_to_string (DdimFitMethod method);
gboolean    ddim_fit_method_from_string (const char *s, DdimFitMethod *method, GError **error);

G_END_DECLS
