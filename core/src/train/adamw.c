/* AdamW, the learning-rate schedule, gradient clipping and the EMA of the
 * weights (see ddim/train.h). Every loop runs in a fixed order on one
 * thread, so results depend only on the inputs. */
#include <math.h>

#include "ddim/error.h"
#include "ddim/train.h"

void
ddim_train_options_init (DdimTrainOptions *o)
{
  g_return_if_fail (o != NULL);
  *o = (DdimTrainOptions) {
    .batch_size = 64,
    .steps = 10000,
    .lr = 2e-4,
    .warmup_steps = 500,
    .lr_min_ratio = 0.0,
    .weight_decay = 0.0,
    .beta1 = 0.9,
    .beta2 = 0.999,
    .adam_eps = 1e-8,
    .grad_clip = 1.0,
    .ema_decay = 0.9999,
    .ema_warmup = TRUE,
    .hflip = FALSE,
    .seed = 0,
    .prediction = DDIM_PREDICT_EPSILON,
    .checkpoint_every = 0,
  };
}

double
ddim_train_lr_at (const DdimTrainOptions *o, int step)
{
  g_return_val_if_fail (o != NULL, 0.0);
  if (step < 0)
    step = 0;
  if (step < o->warmup_steps)
    return o->lr * (step + 1) / o->warmup_steps;
  double lr_min = o->lr * o->lr_min_ratio;
  int decay_steps = MAX (1, o->steps - MAX (o->warmup_steps, 0));
  double p = (double) (step - MAX (o->warmup_steps, 0)) / decay_steps;
  if (p > 1.0)
    p = 1.0;
  return lr_min + (o->lr - lr_min) * 0.5 * (1.0 + cos (G_PI * p));
}

void
ddim_adamw_step (const DdimAdamW *a, gint64 t, float *param, const float *grad, float *m,
                 float *v, gsize n, gboolean decay)
{
  g_return_if_fail (a != NULL && t >= 1);
  double bc1 = 1.0 - pow (a->beta1, (double) t);
  double bc2 = 1.0 - pow (a->beta2, (double) t);
  float b1 = (float) a->beta1, b2 = (float) a->beta2;
  float step_size = (float) (a->lr / bc1);
  float inv_sqrt_bc2 = (float) (1.0 / sqrt (bc2));
  float eps = (float) a->eps;
  float shrink = decay ? (float) (1.0 - a->lr * a->weight_decay) : 1.f;
  for (gsize i = 0; i < n; i++)
    {
      float g = grad[i];
      float p = param[i] * shrink;
      float mi = b1 * m[i] + (1.f - b1) * g;
      float vi = b2 * v[i] + (1.f - b2) * g * g;
      m[i] = mi;
      v[i] = vi;
      param[i] = p - step_size * mi / (sqrtf (vi) * inv_sqrt_bc2 + eps);
    }
}

double
ddim_clip_grad_norm (float *grad, gsize n, double max_norm)
{
  double ss = 0.0;
  for (gsize i = 0; i < n; i++)
    ss += (double) grad[i] * grad[i];
  double norm = sqrt (ss);
  if (max_norm > 0 && norm > max_norm)
    {
      float coef = (float) (max_norm / (norm + 1e-6));
      for (gsize i = 0; i < n; i++)
        grad[i] *= coef;
    }
  return norm;
}

double
ddim_ema_decay_at (double decay, gboolean warmup, gint64 n_updates)
{
  gint64 k = n_updates - 1;
  if (k <= 0)
    return 0.0;
  if (!warmup)
    return decay;
  double d = (1.0 + (double) k) / (10.0 + (double) k);
  return MIN (decay, d);
}

void
ddim_ema_update (float *ema, const float *param, gsize n, double decay)
{
  float d = (float) decay, one_minus = (float) (1.0 - decay);
  for (gsize i = 0; i < n; i++)
    ema[i] = d * ema[i] + one_minus * param[i];
}

/* The optimiser part of the options: steps, learning-rate schedule, AdamW
 * and clipping. DDIM_ERROR_INVALID naming the first bad field. */
gboolean
ddim_train_optimizer_options_check (const DdimTrainOptions *o, GError **error)
{
  const char *bad = NULL;
  if (o->steps < 0)
    bad = "steps must be >= 0";
  else if (!(o->lr > 0 && isfinite (o->lr)))
    bad = "lr must be a positive number";
  else if (o->warmup_steps < 0)
    bad = "warmup_steps must be >= 0";
  else if (!(o->lr_min_ratio >= 0 && o->lr_min_ratio <= 1))
    bad = "lr_min_ratio must be between 0 and 1";
  else if (!(o->weight_decay >= 0 && isfinite (o->weight_decay)))
    bad = "weight_decay must be >= 0";
  else if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1))
    bad = "the Adam betas must be in [0, 1)";
  else if (!(o->adam_eps > 0 && isfinite (o->adam_eps)))
    bad = "adam_eps must be positive";
  else if (!isfinite (o->grad_clip))
    bad = "grad_clip must be a number (<= 0: no clipping)";
  if (bad)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "training options: %s", bad);
      return FALSE;
    }
  return TRUE;
}
