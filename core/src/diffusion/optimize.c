/* Optimisation-based inversion through the DDIM sampling chain. */
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "ddim/image.h"
#include "ddim/optimize.h"

void
ddim_optimize_options_init (DdimOptimizeOptions *o)
{
  memset (o, 0, sizeof *o);
  o->iterations = 100;
  o->learning_rate = 0.01;
  o->prior_weight = 0.01;
  o->init = DDIM_OPTIMIZE_INIT_DDIM;
}

/* One deterministic DDIM step is x' = A x + B out(x, t): x0 and eps are
 * linear in (x, out) for every prediction type. */
static void
step_coefficients (const DdimSchedule *s, int t, int prev, float *A, float *B)
{
  float a = ddim_schedule_alpha (s, t), ap = ddim_schedule_alpha (s, prev);
  float sa = sqrtf (a), sb = sqrtf (1.f - a), cp = sqrtf (ap), dp = sqrtf (1.f - ap);
  switch (s->prediction)
    {
    case DDIM_PREDICT_V:
      /* x0 = sa x - sb v, eps = sa v + sb x */
      *A = cp * sa + dp * sb;
      *B = -cp * sb + dp * sa;
      break;
    case DDIM_PREDICT_SAMPLE:
      /* x0 = out, eps = (x - sa out) / sb */
      *A = dp / sb;
      *B = cp - dp * sa / sb;
      break;
    case DDIM_PREDICT_EPSILON:
    default:
      /* x0 = (x - sb eps) / sa */
      *A = cp / sa;
      *B = dp - cp * sb / sa;
      break;
    }
}

typedef struct {
  DdimUNet           *unet;
  const DdimSchedule *s;
  int                 steps, ratio, h, w, c;
  gsize               count;
  int                *ts;
  float              *states;   /* (steps + 1) x count: inputs of each step, then x_0 */
  float              *out, *t;
  DdimOptimizeStats  *stats;
} Chain;

static gboolean
chain_forward (Chain *ch, const float *z, GError **error)
{
  memcpy (ch->states, z, ch->count * sizeof (float));
  for (int i = 0; i < ch->steps; i++)
    {
      float *x = ch->states + (gsize) i * ch->count, *next = x + ch->count;
      float A, B;
      ch->t[0] = (float) ch->ts[i];
      if (!ddim_unet_forward (ch->unet, x, 1, ch->h, ch->w, ch->t, ch->out, error))
        return FALSE;
      ch->stats->model_evals++;
      step_coefficients (ch->s, ch->ts[i], ch->ts[i] - ch->ratio, &A, &B);
      for (gsize j = 0; j < ch->count; j++)
        next[j] = A * x[j] + B * ch->out[j];
    }
  return TRUE;
}

/* g: in d loss / d x_0, out d loss / d z. */
static gboolean
chain_backward (Chain *ch, float *g, float *scratch, GError **error)
{
  for (int i = ch->steps - 1; i >= 0; i--)
    {
      const float *x = ch->states + (gsize) i * ch->count;
      float A, B;
      step_coefficients (ch->s, ch->ts[i], ch->ts[i] - ch->ratio, &A, &B);
      for (gsize j = 0; j < ch->count; j++)
        scratch[j] = B * g[j];
      ch->t[0] = (float) ch->ts[i];
      g_autofree float *gx = g_new (float, ch->count);
      DdimUNetVjp io = { .grad_x = gx };
      if (!ddim_unet_vjp (ch->unet, x, 1, ch->h, ch->w, ch->t, scratch, &io, error))
        return FALSE;
      ch->stats->model_vjps++;
      for (gsize j = 0; j < ch->count; j++)
        g[j] = A * g[j] + gx[j];
    }
  return TRUE;
}

gboolean
ddim_decode_vjp (DdimUNet *unet, const DdimSchedule *s, const float *z, int height, int width,
                 const DdimRunOptions *ddim, const float *w, float *x0, float *grad_z,
                 GError **error)
{
  g_return_val_if_fail (unet && s && z && ddim && w && grad_z, FALSE);
  if (!ddim_unet_check_size (unet, height, width, error))
    return FALSE;
  DdimOptimizeStats stats = { 0 };
  float tbuf[1];
  Chain ch = { unet, s, ddim->steps, 0, height, width, ddim_unet_get_config (unet)->in_channels,
               0, NULL, NULL, NULL, tbuf, &stats };
  ch.count = (gsize) ch.c * height * width;
  g_autofree int *ts = ch.ts = ddim_schedule_timesteps (s, ddim->steps, ddim->spacing, error);
  if (ts == NULL)
    return FALSE;
  ch.ratio = ddim_schedule_step_ratio (s, ddim->steps);
  g_autofree float *states = ch.states = g_new (float, (gsize) (ch.steps + 1) * ch.count);
  g_autofree float *out = ch.out = g_new (float, ch.count);
  g_autofree float *scratch = g_new (float, ch.count);
  if (!chain_forward (&ch, z, error))
    return FALSE;
  if (x0)
    memcpy (x0, states + (gsize) ch.steps * ch.count, ch.count * sizeof (float));
  memcpy (grad_z, w, ch.count * sizeof (float));
  return chain_backward (&ch, grad_z, scratch, error);
}

static double
mse (const float *a, const float *b, gsize n)
{
  double s = 0;
  for (gsize i = 0; i < n; i++)
    {
      double d = (double) a[i] - b[i];
      s += d * d;
    }
  return s / n;
}

gboolean
ddim_invert_optimize (DdimUNet *unet, const DdimSchedule *s, const float *x0, float *z, int height,
                      int width, const DdimRunOptions *ddim, const DdimOptimizeOptions *o,
                      DdimOptimizeStats *stats_out, GError **error)
{
  g_return_val_if_fail (unet && s && x0 && z && ddim && o, FALSE);
  if (!ddim_unet_check_size (unet, height, width, error))
    return FALSE;
  if (o->iterations < 0 || !(o->learning_rate > 0) || !(o->prior_weight >= 0)
      || isinf (o->learning_rate) || isinf (o->prior_weight))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "optimisation needs iterations >= 0, a learning rate > 0 and a prior "
                   "weight >= 0 (got %d, %g, %g)", o->iterations, o->learning_rate,
                   o->prior_weight);
      return FALSE;
    }
  const DdimUNetConfig *cfg = ddim_unet_get_config (unet);
  DdimOptimizeStats stats = { 0 };
  Chain ch = { unet, s, ddim->steps, ddim_schedule_step_ratio (s, MAX (ddim->steps, 1)), height,
               width, cfg->in_channels, 0, NULL, NULL, NULL, NULL, &stats };
  ch.count = (gsize) ch.c * height * width;
  ch.ts = ddim_schedule_timesteps (s, ddim->steps, ddim->spacing, error);
  if (ch.ts == NULL)
    return FALSE;
  gsize n = ch.count;
  g_autofree int *ts = ch.ts;
  g_autofree float *states = ch.states = g_new (float, (gsize) (ch.steps + 1) * n);
  g_autofree float *out = ch.out = g_new (float, n);
  float tbuf[1];
  ch.t = tbuf;

  switch (o->init)
    {
    case DDIM_OPTIMIZE_INIT_ZERO:
      memset (z, 0, n * sizeof (float));
      break;
    case DDIM_OPTIMIZE_INIT_NOISE:
      ddim_randn (o->seed, z, n);
      break;
    case DDIM_OPTIMIZE_INIT_DDIM:
      {
        memcpy (z, x0, n * sizeof (float));
        DdimRunOptions inv = *ddim;
        inv.trajectory = NULL;
        if (!ddim_invert (unet, s, z, 1, height, width, &inv, error))
          return FALSE;
        stats.model_evals += ddim->steps;
      }
      break;
    case DDIM_OPTIMIZE_INIT_GIVEN:
      break;
    }

  g_autofree float *g = g_new (float, n);
  g_autofree float *scratch = g_new (float, n);
  g_autofree float *m = g_new0 (float, n);
  g_autofree float *v = g_new0 (float, n);
  g_autofree float *best = g_memdup2 (z, n * sizeof (float));
  double best_loss = INFINITY, best_mse = INFINITY;
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;

  /* Iteration k evaluates z_k (and keeps the best); the last pass only
   * evaluates. */
  for (int it = 0; it <= o->iterations; it++)
    {
      if (o->cancellable && g_cancellable_is_cancelled (o->cancellable))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED, "cancelled");
          return FALSE;
        }
      if (!chain_forward (&ch, z, error))
        return FALSE;
      const float *xr = states + (gsize) ch.steps * n;
      double rec = mse (xr, x0, n);
      double norm2 = 0;
      for (gsize j = 0; j < n; j++)
        norm2 += (double) z[j] * z[j];
      double shell = norm2 / n - 1;
      double loss = rec + o->prior_weight * shell * shell;
      if (it == 0)
        stats.initial_mse = rec;
      if (loss < best_loss)
        {
          best_loss = loss;
          best_mse = rec;
          memcpy (best, z, n * sizeof (float));
        }
      if (it > 0 && o->progress)
        o->progress (it, o->iterations, rec, ddim_psnr (xr, x0, n), o->progress_data);
      if (it == o->iterations)
        break;

      for (gsize j = 0; j < n; j++)
        g[j] = (float) (2.0 * ((double) xr[j] - x0[j]) / n);
      if (!chain_backward (&ch, g, scratch, error))
        return FALSE;
      double pg = o->prior_weight * 2 * shell * 2.0 / n;
      double c1 = 1 - pow (b1, it + 1), c2 = 1 - pow (b2, it + 1);
      for (gsize j = 0; j < n; j++)
        {
          double gj = g[j] + pg * z[j];
          m[j] = (float) (b1 * m[j] + (1 - b1) * gj);
          v[j] = (float) (b2 * v[j] + (1 - b2) * gj * gj);
          z[j] -= (float) (o->learning_rate * (m[j] / c1) / (sqrt (v[j] / c2) + eps));
        }
    }
  memcpy (z, best, n * sizeof (float));
  stats.final_mse = best_mse;
  stats.final_psnr = 10 * log10 (4.0 / MAX (best_mse, 1e-30));
  if (stats_out)
    *stats_out = stats;
  return TRUE;
}
