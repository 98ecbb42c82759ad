/* The parts of supervised fitting (ddim/fit.h) shared by fit.c (one
 * direction from two sets) and fit-classes.c (one direction per class of a
 * labelled set). Internal to libddim. */
#pragma once

#include "ddim/fit.h"

G_BEGIN_DECLS

/* What a fit at one image size collects: the timestep interval, the
 * sampling steps to run (up to the last one inside it), the size of one
 * block (C_mid * h * w, or C_mid when pooled) and the feature size D:
 * one block (h averaged over the interval's steps) or, per timestep, one
 * block for each of the n_blocks steps in the interval, whose timesteps
 * are timesteps[0..n_blocks-1] (descending). */
typedef struct {
  int   t_min, t_max;
  int   n_steps;
  int   hc, hh, hw;
  gsize block;
  int   n_blocks;        /* 1 unless per timestep */
  int  *timesteps;       /* per timestep: n_blocks timesteps (owned); else NULL */
  gsize D;
} DdimFitPlan;

void ddim_fit_plan_clear (DdimFitPlan *plan);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DdimFitPlan, ddim_fit_plan_clear)

/* Checks the model, size and interval of @options (errors as
 * ddim_fit_direction) and fills @plan. */
gboolean ddim_fit_plan (DdimUNet *unet, const DdimSchedule *schedule, int height, int width,
                        const DdimFitOptions *options, DdimFitPlan *plan, GError **error);

/* Model calls collecting the features of @n examples costs (the unit of
 * the progress count). */
int ddim_fit_plan_calls (const DdimFitPlan *plan, const DdimFitOptions *options, int n);

/* The feature of each of @n examples @inputs [n, C, H, W] into @features
 * [n, D]; progress reported as (*done + ..., total), *done advanced. */
gboolean ddim_fit_collect (DdimUNet *unet, const DdimSchedule *schedule, const float *inputs,
                           int n, int height, int width, const DdimFitOptions *options,
                           const DdimFitPlan *plan, double *features, int *done, int total,
                           GError **error);

/* The direction @name from @n features [n, D]: @y[i] is +1 for a positive,
 * -1 for a negative; @weight[i] > 0 its weight, the positives' weights and
 * the negatives' each summing to 1/2 (the class means are the weighted
 * means; logistic regression weighs each example's loss so). Errors: means
 * that coincide, no logistic boundary (DDIM_ERROR_INVALID). */
DdimDirection *ddim_fit_from_features (const char *name, const char *description,
                                       const double *features, const double *y,
                                       const double *weight, int n, const DdimFitPlan *plan,
                                       const DdimFitOptions *options, GError **error);

G_END_DECLS
