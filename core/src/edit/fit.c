/* Supervised h-space directions (see ddim/fit.h). */
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "ddim/fit.h"
#include "edit/fit-private.h"
#include "edit/reverse.h"

/* Examples inverted and sampled together: large enough for the GEMMs,
 * small enough that activations of big models stay bounded. */
#define FIT_BATCH 8

void
ddim_fit_options_init (DdimFitOptions *o, const DdimSchedule *s)
{
  memset (o, 0, sizeof *o);
  ddim_run_options_init (&o->run, s);
  o->t_min = o->t_max = -1;
  o->method = DDIM_FIT_MEAN_DIFFERENCE;
  o->l2 = 1e-3;
  o->iterations = 500;
}

const char *
ddim_fit_method_to_string (DdimFitMethod m)
{
  switch (m)
    {
    case DDIM_FIT_LOGISTIC:
      return "logistic";
    case DDIM_FIT_PROTOTYPE:
      return "prototype";
    default:
      return "mean-difference";
    }
}

gboolean
ddim_fit_method_from_string (const char *s, DdimFitMethod *m, GError **error)
{
  if (g_strcmp0 (s, "mean-difference") == 0 || g_strcmp0 (s, "mean") == 0)
    *m = DDIM_FIT_MEAN_DIFFERENCE;
  else if (g_strcmp0 (s, "logistic") == 0)
    *m = DDIM_FIT_LOGISTIC;
  else if (g_strcmp0 (s, "prototype") == 0)
    *m = DDIM_FIT_PROTOTYPE;
  else
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "fit method '%s' is not one of mean-difference, logistic, prototype",
                   s ? s : "(null)");
      return FALSE;
    }
  return TRUE;
}

typedef struct {
  double *sum;         /* [nb, n_blocks, block] */
  int     used;        /* steps summed */
  int     t_min, t_max;
  int     n_blocks;    /* > 1: each step in its own block */
  gsize   block;       /* h of one example at one step */
} Collect;

static gboolean
collect_wants (int step, int t, gpointer data)
{
  (void) step;
  const Collect *c = data;
  return t >= c->t_min && t <= c->t_max;
}

static void
collect_observe (int step, int t, const float *h, gsize count, gpointer data)
{
  (void) step;
  (void) t;
  Collect *c = data;
  if (c->n_blocks == 1)
    for (gsize i = 0; i < count; i++)
      c->sum[i] += h[i];
  else
    {
      /* The steps in the interval come in order: the used-th block. */
      gsize nb = count / c->block, block = c->block;
      for (gsize b = 0; b < nb; b++)
        {
          double *dst = c->sum + (b * c->n_blocks + c->used) * block;
          for (gsize i = 0; i < block; i++)
            dst[i] = h[b * block + i];
        }
    }
  c->used++;
}

/* The pooled h feature of each example: features [n, D] (D = C_mid*h*w, or
 * C_mid with pool_space). */
gboolean
ddim_fit_collect (DdimUNet *unet, const DdimSchedule *s, const float *inputs, int n, int height,
                  int width, const DdimFitOptions *o, const DdimFitPlan *plan, double *features,
                  int *done, int total, GError **error)
{
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  gsize xs = (gsize) c->in_channels * height * width;
  int hc = plan->hc;
  gsize hs = (gsize) hc * plan->hh * plan->hw, positions = (gsize) plan->hh * plan->hw;
  gsize D = plan->D;

  for (int b0 = 0; b0 < n; b0 += FIT_BATCH)
    {
      int nb = MIN (FIT_BATCH, n - b0);
      g_autofree float *x = g_memdup2 (inputs + (gsize) b0 * xs, (gsize) nb * xs * sizeof (float));
      DdimRunOptions ro;
      DdimProgressRelay relay;
      if (!o->latents)
        {
          ddim_run_options_relay (&o->run, &relay, *done, total, &ro);
          if (!ddim_invert (unet, s, x, nb, height, width, &ro, error))
            return FALSE;
          *done += o->run.steps;
        }
      int nblk = plan->n_blocks;
      g_autofree double *sum = g_new0 (double, (gsize) nb * nblk * hs);
      Collect col = { sum, 0, plan->t_min, plan->t_max, nblk, hs };
      DdimReverseHooks hooks = { .wants_h = collect_wants, .observe = collect_observe,
                                 .data = &col, .max_steps = plan->n_steps };
      ro = o->run;
      ro.trajectory = NULL;
      if (!ddim_reverse_run (unet, s, x, nb, height, width, &ro, &hooks, *done, total, error))
        return FALSE;
      *done += plan->n_steps;
      g_assert (col.used > 0 && (nblk == 1 || col.used == nblk));
      /* Each block holds h summed over `per_block` steps. */
      int per_block = nblk == 1 ? col.used : 1;
      for (int b = 0; b < nb; b++)
        for (int k = 0; k < nblk; k++)
          {
            double *f = features + (gsize) (b0 + b) * D + (gsize) k * plan->block;
            const double *hsum = sum + ((gsize) b * nblk + k) * hs;
            if (!o->pool_space)
              for (gsize i = 0; i < hs; i++)
                f[i] = hsum[i] / per_block;
            else
              for (int ch = 0; ch < hc; ch++)
                {
                  double a = 0;
                  for (gsize p = 0; p < positions; p++)
                    a += hsum[(gsize) ch * positions + p];
                  f[ch] = a / ((double) per_block * positions);
                }
          }
    }
  return TRUE;
}

int
ddim_fit_plan_calls (const DdimFitPlan *plan, const DdimFitOptions *o, int n)
{
  int chunks = (n + FIT_BATCH - 1) / FIT_BATCH;
  return chunks * (plan->n_steps + (o->latents ? 0 : o->run.steps));
}

gboolean
ddim_fit_plan (DdimUNet *unet, const DdimSchedule *s, int height, int width,
               const DdimFitOptions *o, DdimFitPlan *plan, GError **error)
{
  if (!ddim_reverse_check (unet, height, width, error))
    return FALSE;
  int T = s->num_train_timesteps;
  plan->t_min = o->t_min < 0 ? T / 2 : o->t_min;
  plan->t_max = o->t_max < 0 ? T - 1 : o->t_max;
  if (plan->t_min > plan->t_max)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the fitting interval [%d, %d] is empty", plan->t_min, plan->t_max);
      return FALSE;
    }
  g_autofree int *ts = ddim_schedule_timesteps (s, o->run.steps, o->run.spacing, error);
  if (ts == NULL)
    return FALSE;
  /* Steps run until the last one inside the interval (timesteps descend). */
  plan->n_steps = 0;
  for (int i = 0; i < o->run.steps; i++)
    if (ts[i] >= plan->t_min && ts[i] <= plan->t_max)
      plan->n_steps = i + 1;
  if (plan->n_steps == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "no sampling timestep of %d steps lies in [%d, %d]; widen the interval or "
                   "use more steps", o->run.steps, plan->t_min, plan->t_max);
      return FALSE;
    }
  ddim_unet_hspace_shape (unet, height, width, &plan->hc, &plan->hh, &plan->hw);
  plan->block = o->pool_space ? (gsize) plan->hc : (gsize) plan->hc * plan->hh * plan->hw;
  plan->n_blocks = 1;
  plan->timesteps = NULL;
  if (o->per_timestep)
    {
      int in = 0;
      for (int i = 0; i < plan->n_steps; i++)
        in += ts[i] >= plan->t_min && ts[i] <= plan->t_max;
      if (in < 2)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                       "a per-timestep direction needs at least 2 sampling steps in [%d, %d]; "
                       "%d steps have %d there", plan->t_min, plan->t_max, o->run.steps, in);
          return FALSE;
        }
      plan->n_blocks = in;
      plan->timesteps = g_new (int, in);
      for (int i = 0, k = 0; i < plan->n_steps; i++)
        if (ts[i] >= plan->t_min && ts[i] <= plan->t_max)
          plan->timesteps[k++] = ts[i];
    }
  plan->D = plan->block * plan->n_blocks;
  return TRUE;
}

void
ddim_fit_plan_clear (DdimFitPlan *plan)
{
  g_clear_pointer (&plan->timesteps, g_free);
}

/* The weighted mean of the examples on side @side (+1 or -1) of @y; the
 * weights there sum to 1/2. */
static void
side_mean (const double *f, const double *y, const double *w, int n, gsize D, double side,
           double *mean)
{
  memset (mean, 0, D * sizeof (double));
  for (int i = 0; i < n; i++)
    if (y[i] == side)
      for (gsize k = 0; k < D; k++)
        mean[k] += 2 * w[i] * f[(gsize) i * D + k];
}

static double
dot (const double *a, const double *b, gsize n)
{
  double s = 0;
  for (gsize i = 0; i < n; i++)
    s += a[i] * b[i];
  return s;
}

/* Replaces the positives' @mean by the positive example nearest to it
 * (Euclidean distance over the whole feature, every block of a
 * per-timestep one; the first on a tie). */
static void
nearest_positive (const double *f, const double *y, int n, gsize D, double *mean)
{
  int best = -1;
  double best_d2 = 0;
  for (int i = 0; i < n; i++)
    {
      if (y[i] != 1.0)
        continue;
      double d2 = 0;
      for (gsize k = 0; k < D; k++)
        {
          double v = f[(gsize) i * D + k] - mean[k];
          d2 += v * v;
        }
      if (best < 0 || d2 < best_d2)
        {
          best = i;
          best_d2 = d2;
        }
    }
  g_assert (best >= 0);
  memcpy (mean, f + (gsize) best * D, D * sizeof (double));
}

/* Logistic regression with balanced class weights and an L2 penalty, by
 * Nesterov-accelerated gradient descent with step 1/L (L from the largest
 * eigenvalue of the weighted Gram matrix). @z [N, D] are the centred,
 * scaled features, @y +-1. Writes the weights (unnormalised) to @w. */
static void
logistic_fit (const double *z, const double *y, const double *cw, int N, gsize D, double l2,
              int iterations, double *w)
{
  /* Largest eigenvalue of sum_i cw_i z_i z_i^T = that of the N x N matrix
   * G_ij = sqrt(cw_i cw_j) z_i . z_j, by power iteration. */
  g_autofree double *G = g_new (double, (gsize) N * N);
  for (int i = 0; i < N; i++)
    for (int j = 0; j <= i; j++)
      {
        double g = sqrt (cw[i] * cw[j]) * dot (z + (gsize) i * D, z + (gsize) j * D, D);
        G[(gsize) i * N + j] = G[(gsize) j * N + i] = g;
      }
  g_autofree double *p = g_new (double, N), *q = g_new (double, N);
  for (int i = 0; i < N; i++)
    p[i] = 1.0 / sqrt (N);
  double lmax = 0;
  for (int it = 0; it < 100; it++)
    {
      for (int i = 0; i < N; i++)
        q[i] = dot (G + (gsize) i * N, p, N);
      double nq = sqrt (dot (q, q, N));
      if (nq == 0)
        break;
      lmax = nq;
      for (int i = 0; i < N; i++)
        p[i] = q[i] / nq;
    }
  double L = 0.25 * lmax * 1.01 + l2;
  double step = 1.0 / L;

  /* Parameters (w, b) and the momentum sequence v. */
  g_autofree double *v = g_new0 (double, D), *grad = g_new (double, D), *prev = g_new0 (double, D);
  double b = 0, vb = 0, bprev = 0;
  memset (w, 0, D * sizeof (double));
  for (int it = 0; it < iterations; it++)
    {
      memset (grad, 0, D * sizeof (double));
      double gb = 0;
      for (int i = 0; i < N; i++)
        {
          const double *zi = z + (gsize) i * D;
          double m = y[i] * (dot (zi, v, D) + vb);
          /* d/dm log(1 + exp(-m)) = -1 / (1 + exp(m)) */
          double g = -cw[i] * y[i] / (1.0 + exp (m));
          for (gsize k = 0; k < D; k++)
            grad[k] += g * zi[k];
          gb += g;
        }
      for (gsize k = 0; k < D; k++)
        {
          grad[k] += l2 * v[k];
          prev[k] = w[k];
          w[k] = v[k] - step * grad[k];
        }
      bprev = b;
      b = vb - step * gb;
      double mom = (double) it / (it + 3);
      for (gsize k = 0; k < D; k++)
        v[k] = w[k] + mom * (w[k] - prev[k]);
      vb = b + mom * (b - bprev);
    }
}

DdimDirection *
ddim_fit_from_features (const char *name, const char *description, const double *f,
                        const double *y, const double *cw, int N, const DdimFitPlan *plan,
                        const DdimFitOptions *o, GError **error)
{
  gsize D = plan->D;
  g_autofree double *mp = g_new (double, D), *mn = g_new (double, D), *dir = g_new (double, D);
  side_mean (f, y, cw, N, D, 1.0, mp);
  side_mean (f, y, cw, N, D, -1.0, mn);
  if (o->method == DDIM_FIT_PROTOTYPE)
    nearest_positive (f, y, N, D, mp);
  for (gsize k = 0; k < D; k++)
    dir[k] = mp[k] - mn[k];
  double diff_norm = sqrt (dot (dir, dir, D));
  if (!(diff_norm > 0))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the positive and negative examples give the same %s; no direction "
                   "separates them",
                   o->method == DDIM_FIT_PROTOTYPE ? "h (positive prototype, negatives' mean)"
                                                   : "mean h");
      return NULL;
    }
  double sigma = diff_norm;
  if (o->method == DDIM_FIT_LOGISTIC)
    {
      g_autofree double *mu = g_new0 (double, D), *z = g_new (double, (gsize) N * D);
      for (int i = 0; i < N; i++)
        for (gsize k = 0; k < D; k++)
          mu[k] += f[(gsize) i * D + k] / N;
      double ss = 0;
      for (int i = 0; i < N; i++)
        for (gsize k = 0; k < D; k++)
          {
            double v = f[(gsize) i * D + k] - mu[k];
            z[(gsize) i * D + k] = v;
            ss += v * v;
          }
      double scale = ss > 0 ? 1.0 / sqrt (ss / ((double) N * D)) : 1.0;
      for (gsize i = 0; i < (gsize) N * D; i++)
        z[i] *= scale;
      logistic_fit (z, y, cw, N, D, o->l2, o->iterations, dir);
      double wn = sqrt (dot (dir, dir, D));
      if (!(wn > 0))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                       "logistic regression found no boundary between the examples");
          return NULL;
        }
      for (gsize k = 0; k < D; k++)
        dir[k] /= wn;
      /* The normal of the boundary, oriented from negatives to positives;
       * sigma is the class means' gap along it. */
      double gap = 0;
      for (gsize k = 0; k < D; k++)
        gap += dir[k] * (mp[k] - mn[k]);
      if (gap < 0)
        {
          for (gsize k = 0; k < D; k++)
            dir[k] = -dir[k];
          gap = -gap;
        }
      sigma = gap;
    }
  else
    for (gsize k = 0; k < D; k++)
      dir[k] /= diff_norm;

  int hc = plan->hc, hh = plan->hh, hw = plan->hw;
  int ndim = o->pool_space ? 1 : 3;
  DdimDirection *d = plan->n_blocks > 1
                         ? ddim_direction_new_per_timestep (name, ndim, hc, hh, hw,
                                                            plan->n_blocks, plan->timesteps)
                         : ddim_direction_new (name, DDIM_SPACE_H, ndim, hc, hh, hw);
  /* Normalise again in float so the stored vector has unit norm there;
   * per timestep, unit RMS norm of the blocks (and sigma in those units). */
  double fn = 0;
  for (gsize k = 0; k < D; k++)
    {
      d->data[k] = (float) dir[k];
      fn += (double) d->data[k] * d->data[k];
    }
  double blocks_rms = sqrt ((double) plan->n_blocks);
  fn = sqrt (fn) / blocks_rms;
  sigma /= blocks_rms;
  for (gsize k = 0; k < D; k++)
    d->data[k] = (float) (d->data[k] / fn);
  d->kind = DDIM_DIRECTION_SUPERVISED;
  g_free (d->description);
  d->description = g_strdup (description ? description : "");
  d->t_min = plan->t_min;
  d->t_max = plan->t_max;
  d->sigma = sigma;
  d->strength_min = -2 * sigma;
  d->strength_max = 2 * sigma;
  g_free (d->model_sha256);
  d->model_sha256 = g_strdup (o->model_sha256 ? o->model_sha256 : "");
  g_free (d->method);
  d->method = g_strdup (ddim_fit_method_to_string (o->method));
  d->hspace_channels = hc;
  d->hspace_height = hh;
  d->hspace_width = hw;
  return d;
}

DdimDirection *
ddim_fit_direction (DdimUNet *unet, const DdimSchedule *s, const char *name,
                    const float *positives, int n_pos, const float *negatives, int n_neg,
                    int height, int width, const DdimFitOptions *o, GError **error)
{
  g_return_val_if_fail (unet && s && name && o, NULL);
  g_return_val_if_fail (n_pos <= 0 || positives != NULL, NULL);
  g_return_val_if_fail (n_neg <= 0 || negatives != NULL, NULL);
  if (!ddim_direction_name_is_valid (name, error))
    return NULL;
  if (n_pos < 1 || n_neg < 1)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "fitting a direction needs at least one positive and one negative example "
                   "(got %d and %d)", MAX (n_pos, 0), MAX (n_neg, 0));
      return NULL;
    }
  g_auto (DdimFitPlan) plan = { 0 };
  if (!ddim_fit_plan (unet, s, height, width, o, &plan, error))
    return NULL;

  int N = n_pos + n_neg;
  int total = ddim_fit_plan_calls (&plan, o, n_pos) + ddim_fit_plan_calls (&plan, o, n_neg);
  int done = 0;
  g_autofree double *f = g_new (double, (gsize) N * plan.D);
  if (!ddim_fit_collect (unet, s, positives, n_pos, height, width, o, &plan, f, &done, total,
                         error)
      || !ddim_fit_collect (unet, s, negatives, n_neg, height, width, o, &plan,
                            f + (gsize) n_pos * plan.D, &done, total, error))
    return NULL;
  g_autofree double *y = g_new (double, N), *cw = g_new (double, N);
  for (int i = 0; i < N; i++)
    {
      y[i] = i < n_pos ? 1.0 : -1.0;
      cw[i] = i < n_pos ? 0.5 / n_pos : 0.5 / n_neg;
    }
  return ddim_fit_from_features (name, o->description, f, y, cw, N, &plan, o, error);
}
