/* Unsupervised directions: Jacobian singular vectors and PCA of h (see
 * ddim/discover.h). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "ddim/discover.h"
#include "ddim/error.h"
#include "edit/reverse.h"
#include "edit/subspace.h"

/* Vectors (or samples) per batched model pass. */
#define DISCOVER_BATCH 8

void
ddim_discover_options_init (DdimDiscoverOptions *o)
{
  memset (o, 0, sizeof *o);
  o->k = 4;
  o->iterations = 30;
  o->tolerance = 1e-4;
  o->want_x = TRUE;
  o->want_h = TRUE;
}

static gboolean
is_cancelled (const DdimDiscoverOptions *o, GError **error)
{
  if (o->cancellable && g_cancellable_is_cancelled (o->cancellable))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED, "cancelled");
      return TRUE;
    }
  return FALSE;
}

typedef struct {
  DdimUNet *unet;
  int       height, width;
  float    *xrep, *trep;   /* x and t repeated DISCOVER_BATCH times */
  gsize     dx, dh;
  const DdimDiscoverOptions *o;
  int       done, total;
} Jac;

static void
tick (Jac *j)
{
  j->done++;
  if (j->o->progress)
    j->o->progress (MIN (j->done, j->total), j->total, j->o->progress_data);
}

/* U [k, dh] = J V for the rows of V [k, dx]. */
static gboolean
apply_j (Jac *j, const float *V, int k, float *U, GError **error)
{
  for (int c0 = 0; c0 < k; c0 += DISCOVER_BATCH)
    {
      int nb = MIN (DISCOVER_BATCH, k - c0);
      if (!ddim_unet_hspace_jvp (j->unet, j->xrep, nb, j->height, j->width, j->trep,
                                 V + (gsize) c0 * j->dx, NULL, U + (gsize) c0 * j->dh, error))
        return FALSE;
      tick (j);
    }
  return TRUE;
}

/* V [k, dx] = J^T U for the rows of U [k, dh]. */
static gboolean
apply_jt (Jac *j, const float *U, int k, float *V, GError **error)
{
  for (int c0 = 0; c0 < k; c0 += DISCOVER_BATCH)
    {
      int nb = MIN (DISCOVER_BATCH, k - c0);
      if (!ddim_unet_hspace_vjp (j->unet, j->xrep, nb, j->height, j->width, j->trep,
                                 U + (gsize) c0 * j->dh, NULL, V + (gsize) c0 * j->dx, error))
        return FALSE;
      tick (j);
    }
  return TRUE;
}

/* Flips rows of @v (and @u) so that each row's largest entry is positive:
 * singular vectors are defined up to sign, and files should not depend on
 * the random start. */
static void
fix_signs (float *v, float *u, int k, gsize dv, gsize du)
{
  for (int i = 0; i < k; i++)
    {
      float *vi = v + (gsize) i * dv;
      gsize best = 0;
      for (gsize m = 1; m < dv; m++)
        if (fabsf (vi[m]) > fabsf (vi[best]))
          best = m;
      if (vi[best] >= 0)
        continue;
      for (gsize m = 0; m < dv; m++)
        vi[m] = -vi[m];
      if (u)
        for (gsize m = 0; m < du; m++)
          u[(gsize) i * du + m] = -u[(gsize) i * du + m];
    }
}

gboolean
ddim_jacobian_svd (DdimUNet *unet, const float *x_t, int height, int width, int t,
                   const DdimDiscoverOptions *o, float *v, float *u, double *sigma,
                   int *iterations_run, GError **error)
{
  g_return_val_if_fail (unet && x_t && o && v && sigma, FALSE);
  if (!ddim_unet_check_size (unet, height, width, error))
    return FALSE;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  int hc, hh, hw;
  ddim_unet_hspace_shape (unet, height, width, &hc, &hh, &hw);
  gsize dx = (gsize) c->in_channels * height * width, dh = (gsize) hc * hh * hw;
  int k = o->k;
  if (k < 1 || (gsize) k > dx || (gsize) k > dh)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the number of components must be between 1 and %" G_GSIZE_FORMAT ", not %d",
                   MIN (dx, dh), k);
      return FALSE;
    }
  if (o->iterations < 1 || t < 0 || !(o->tolerance >= 0))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "bad Jacobian SVD settings: %d iterations, timestep %d, tolerance %g",
                   o->iterations, t, o->tolerance);
      return FALSE;
    }

  int nb = MIN (k, DISCOVER_BATCH), chunks = (k + DISCOVER_BATCH - 1) / DISCOVER_BATCH;
  g_autofree float *xrep = g_new (float, (gsize) nb * dx);
  g_autofree float *trep = g_new (float, nb);
  for (int b = 0; b < nb; b++)
    {
      memcpy (xrep + (gsize) b * dx, x_t, dx * sizeof (float));
      trep[b] = (float) t;
    }
  Jac j = { unet, height, width, xrep, trep, dx, dh, o, 0, 2 * o->iterations * chunks };
  g_autofree float *U = g_new (float, (gsize) k * dh);
  g_autofree double *B = g_new (double, (gsize) k * k), *Q = g_new (double, (gsize) k * k);
  g_autofree double *w = g_new (double, k), *prev = g_new0 (double, k);

  ddim_randn (o->seed, v, (gsize) k * dx);
  ddim_orthonormalize_rows (v, k, dx, o->seed);
  int it;
  for (it = 1; it <= o->iterations; it++)
    {
      if (is_cancelled (o, error) || !apply_j (&j, v, k, U, error))
        return FALSE;
      /* Rayleigh-Ritz: rotate the basis to the eigenvectors of V J^T J V^T. */
      ddim_gram_rows (U, U, k, dh, B);
      ddim_symmetric_eigen (B, k, w, Q);
      ddim_rotate_rows (v, k, dx, Q);
      ddim_rotate_rows (U, k, dh, Q);
      gboolean converged = it > 1;
      for (int i = 0; i < k; i++)
        {
          sigma[i] = sqrt (MAX (w[i], 0.0));
          if (fabs (sigma[i] - prev[i]) > o->tolerance * MAX (sigma[i], 1e-30))
            converged = FALSE;
          prev[i] = sigma[i];
        }
      if (converged || it == o->iterations)
        break;
      if (is_cancelled (o, error) || !apply_jt (&j, U, k, v, error))
        return FALSE;
      ddim_orthonormalize_rows (v, k, dx, o->seed + (guint64) it);
    }
  if (iterations_run)
    *iterations_run = MIN (it, o->iterations);
  for (int i = 0; i < k; i++)
    {
      double inv = sigma[i] > 0 ? 1.0 / sigma[i] : 0.0;
      for (gsize m = 0; m < dh; m++)
        U[(gsize) i * dh + m] = (float) (U[(gsize) i * dh + m] * inv);
    }
  fix_signs (v, U, k, dx, dh);
  if (u)
    memcpy (u, U, (gsize) k * dh * sizeof (float));
  if (o->progress && j.done < j.total)   /* converged early */
    o->progress (j.total, j.total, o->progress_data);
  return TRUE;
}

static void
set_common (DdimDirection *d, DdimDirectionKind kind, const DdimDiscoverOptions *o, int hc,
            int hh, int hw)
{
  d->kind = kind;
  g_free (d->model_sha256);
  d->model_sha256 = g_strdup (o->model_sha256 ? o->model_sha256 : "");
  d->hspace_channels = hc;
  d->hspace_height = hh;
  d->hspace_width = hw;
}

DdimDirectionSet *
ddim_discover_jacobian (DdimUNet *unet, const float *x_t, int height, int width, int t,
                        const DdimDiscoverOptions *o, GError **error)
{
  g_return_val_if_fail (unet && x_t && o, NULL);
  if (!o->want_x && !o->want_h)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "asked for neither x-space nor h-space directions");
      return NULL;
    }
  if (!ddim_unet_check_size (unet, height, width, error))
    return NULL;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  int hc, hh, hw;
  ddim_unet_hspace_shape (unet, height, width, &hc, &hh, &hw);
  gsize dx = (gsize) c->in_channels * height * width, dh = (gsize) hc * hh * hw;
  int k = MAX (o->k, 1);
  g_autofree float *v = g_new (float, (gsize) k * dx);
  g_autofree float *u = g_new (float, (gsize) k * dh);
  g_autofree double *sigma = g_new (double, k);
  if (!ddim_jacobian_svd (unet, x_t, height, width, t, o, v, u, sigma, NULL, error))
    return NULL;

  const char *prefix = o->prefix ? o->prefix : "component";
  double gx = sqrt ((double) dx) / 4;
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  for (int i = 0; i < k; i++)
    {
      if (o->want_x)
        {
          g_autofree char *name = g_strdup_printf ("%s-%d", prefix, i + 1);
          if (!ddim_direction_name_is_valid (name, error))
            return NULL;
          DdimDirection *d = ddim_direction_new (name, DDIM_SPACE_X, 3, c->in_channels, height,
                                                 width);
          memcpy (d->data, v + (gsize) i * dx, dx * sizeof (float));
          set_common (d, DDIM_DIRECTION_UNSUPERVISED, o, hc, hh, hw);
          g_free (d->description);
          d->description = g_strdup_printf ("Jacobian right singular vector %d at t=%d "
                                            "(x-space)", i + 1, t);
          d->t_min = d->t_max = t;
          d->sigma = sigma[i];
          d->strength_min = -gx;
          d->strength_max = gx;
          ddim_direction_set_add (set, d);
        }
      if (o->want_h)
        {
          g_autofree char *name = g_strdup_printf ("%s-%d-h", prefix, i + 1);
          if (!ddim_direction_name_is_valid (name, error))
            return NULL;
          DdimDirection *d = ddim_direction_new (name, DDIM_SPACE_H, 3, hc, hh, hw);
          memcpy (d->data, u + (gsize) i * dh, dh * sizeof (float));
          set_common (d, DDIM_DIRECTION_UNSUPERVISED, o, hc, hh, hw);
          g_free (d->description);
          d->description = g_strdup_printf ("Jacobian left singular vector %d at t=%d "
                                            "(h-space)", i + 1, t);
          d->t_min = d->t_max = t;
          d->sigma = sigma[i];
          d->strength_min = -gx * sigma[i];
          d->strength_max = gx * sigma[i];
          ddim_direction_set_add (set, d);
        }
    }
  return g_steal_pointer (&set);
}

gboolean
ddim_invert_to_timestep (DdimUNet *unet, const DdimSchedule *s, float *x, int height, int width,
                         const DdimRunOptions *run, int t, int *t_reached, GError **error)
{
  g_return_val_if_fail (unet && s && x && run, FALSE);
  if (t < 0 || t >= s->num_train_timesteps)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the timestep must be between 0 and %d, not %d", s->num_train_timesteps - 1,
                   t);
      return FALSE;
    }
  if (!ddim_reverse_check (unet, height, width, error))
    return FALSE;
  g_autofree int *ts = ddim_schedule_timesteps (s, run->steps, run->spacing, error);
  if (ts == NULL)
    return FALSE;
  int i = ddim_reverse_step_at (ts, run->steps, t);
  gsize count = (gsize) ddim_unet_get_config (unet)->in_channels * height * width;
  /* The whole inversion, keeping the state at the wanted level: step j of
   * the inversion reaches ts[steps - 1 - j]. */
  g_autofree float *traj = g_new (float, (gsize) (run->steps + 1) * count);
  DdimRunOptions ro = *run;
  ro.trajectory = traj;
  if (!ddim_invert (unet, s, x, 1, height, width, &ro, error))
    return FALSE;
  memcpy (x, traj + (gsize) (run->steps - i) * count, count * sizeof (float));
  if (t_reached)
    *t_reached = ts[i];
  return TRUE;
}

/* PCA. */

typedef struct {
  float     *X;          /* [m * n, D]: row (j * n + sample) */
  const int *slot;       /* step -> interval index j, or -1 */
  int        n, b0;      /* samples in all; first sample of this chunk */
  gsize      hs, D;
  int        hc;
  gsize      positions;
  gboolean   pool;
} PcaCollect;

static gboolean
pca_wants (int step, int t, gpointer data)
{
  (void) t;
  const PcaCollect *p = data;
  return p->slot[step] >= 0;
}

static void
pca_observe (int step, int t, const float *h, gsize count, gpointer data)
{
  (void) t;
  const PcaCollect *p = data;
  int nb = (int) (count / p->hs);
  for (int b = 0; b < nb; b++)
    {
      float *row = p->X + ((gsize) p->slot[step] * p->n + p->b0 + b) * p->D;
      const float *hb = h + (gsize) b * p->hs;
      if (!p->pool)
        memcpy (row, hb, p->hs * sizeof (float));
      else
        for (int ch = 0; ch < p->hc; ch++)
          {
            double a = 0;
            for (gsize q = 0; q < p->positions; q++)
              a += hb[(gsize) ch * p->positions + q];
            row[ch] = (float) (a / p->positions);
          }
    }
}

DdimDirectionSet *
ddim_discover_pca (DdimUNet *unet, const DdimSchedule *s, const float *latents, int n,
                   int height, int width, const DdimRunOptions *run, int t_min, int t_max,
                   gboolean pool_space, const DdimDiscoverOptions *o, GError **error)
{
  g_return_val_if_fail (unet && s && latents && run && o && n > 0, NULL);
  if (!ddim_reverse_check (unet, height, width, error))
    return NULL;
  int T = s->num_train_timesteps;
  t_min = t_min < 0 ? T / 2 : t_min;
  t_max = t_max < 0 ? T - 1 : t_max;
  g_autofree int *ts = ddim_schedule_timesteps (s, run->steps, run->spacing, error);
  if (ts == NULL)
    return NULL;
  g_autofree int *slot = g_new (int, run->steps);
  int m = 0, n_steps = 0;
  for (int i = 0; i < run->steps; i++)
    {
      slot[i] = (ts[i] >= t_min && ts[i] <= t_max) ? m++ : -1;
      if (slot[i] >= 0)
        n_steps = i + 1;
    }
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  int hc, hh, hw;
  ddim_unet_hspace_shape (unet, height, width, &hc, &hh, &hw);
  gsize hs = (gsize) hc * hh * hw, D = pool_space ? (gsize) hc : hs;
  gsize R = (gsize) m * n;
  int k = o->k;
  if (m == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "no sampling timestep of %d steps lies in [%d, %d]", run->steps, t_min, t_max);
      return NULL;
    }
  if (n < 2 || k < 1 || (gsize) k > D || (gsize) k > R - m || o->iterations < 1)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "PCA of %d components needs at least 2 samples, k at most %" G_GSIZE_FORMAT
                   " (h values) and at most (samples - 1) * steps in the interval "
                   "(%" G_GSIZE_FORMAT "); got %d samples, k = %d", k, D,
                   n >= 2 ? R - m : (gsize) 0, n, k);
      return NULL;
    }

  /* Collect h along the trajectories. */
  g_autofree float *X = g_new (float, R * D);
  gsize xs = (gsize) c->in_channels * height * width;
  int chunks = (n + DISCOVER_BATCH - 1) / DISCOVER_BATCH;
  int total = chunks * n_steps, done = 0;
  DdimRunOptions ro = *run;
  ro.trajectory = NULL;
  ro.progress = o->progress;
  ro.progress_data = o->progress_data;
  ro.cancellable = o->cancellable;
  for (int b0 = 0; b0 < n; b0 += DISCOVER_BATCH)
    {
      int nb = MIN (DISCOVER_BATCH, n - b0);
      g_autofree float *x = g_memdup2 (latents + (gsize) b0 * xs, (gsize) nb * xs * sizeof (float));
      PcaCollect pc = { X, slot, n, b0, hs, D, hc, (gsize) hh * hw, pool_space };
      DdimReverseHooks hooks = { .wants_h = pca_wants, .observe = pca_observe, .data = &pc,
                                 .max_steps = n_steps };
      if (!ddim_reverse_run (unet, s, x, nb, height, width, &ro, &hooks, done, total, error))
        return NULL;
      done += n_steps;
    }

  /* Centre per timestep. */
  g_autofree double *mean = g_new (double, D);
  for (int jm = 0; jm < m; jm++)
    {
      float *blk = X + (gsize) jm * n * D;
      memset (mean, 0, D * sizeof (double));
      for (int b = 0; b < n; b++)
        for (gsize q = 0; q < D; q++)
          mean[q] += blk[(gsize) b * D + q];
      for (gsize q = 0; q < D; q++)
        mean[q] /= n;
      for (int b = 0; b < n; b++)
        for (gsize q = 0; q < D; q++)
          blk[(gsize) b * D + q] = (float) (blk[(gsize) b * D + q] - mean[q]);
    }

  /* Subspace iteration on X^T X with Rayleigh-Ritz. */
  g_autofree float *V = g_new (float, (gsize) k * D);
  g_autofree float *Y = g_new (float, R * k);
  g_autofree double *B = g_new (double, (gsize) k * k), *Q = g_new (double, (gsize) k * k);
  g_autofree double *w = g_new (double, k), *prev = g_new0 (double, k), *yr = g_new (double, k);
  ddim_randn (o->seed, V, (gsize) k * D);
  ddim_orthonormalize_rows (V, k, D, o->seed);
  for (int it = 1; it <= MAX (o->iterations, 100); it++)
    {
      if (is_cancelled (o, error))
        return NULL;
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, (int) R, k, (int) D, 1.f, X, (int) D,
                   V, (int) D, 0.f, Y, k);
      for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++)
          {
            double sum = 0;
            for (gsize r = 0; r < R; r++)
              sum += (double) Y[r * k + a] * Y[r * k + b];
            B[a * k + b] = sum;
          }
      ddim_symmetric_eigen (B, k, w, Q);
      ddim_rotate_rows (V, k, D, Q);
      for (gsize r = 0; r < R; r++)
        {
          for (int a = 0; a < k; a++)
            {
              double sum = 0;
              for (int b = 0; b < k; b++)
                sum += Y[r * k + b] * Q[b * k + a];
              yr[a] = sum;
            }
          for (int a = 0; a < k; a++)
            Y[r * k + a] = (float) yr[a];
        }
      gboolean converged = it > 1;
      for (int a = 0; a < k; a++)
        {
          if (fabs (w[a] - prev[a]) > o->tolerance * MAX (fabs (w[a]), 1e-30))
            converged = FALSE;
          prev[a] = w[a];
        }
      if (converged || it == MAX (o->iterations, 100))
        break;
      cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, k, (int) D, (int) R, 1.f, Y, k, X,
                   (int) D, 0.f, V, (int) D);
      ddim_orthonormalize_rows (V, k, D, o->seed + (guint64) it);
    }
  if (!(w[k - 1] > 1e-12 * MAX (w[0], 1e-30)))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "h varies in fewer than %d directions over these samples; ask for fewer "
                   "components or use more samples", k);
      return NULL;
    }
  fix_signs (V, NULL, k, D, 0);

  const char *prefix = o->prefix ? o->prefix : "pca";
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  for (int a = 0; a < k; a++)
    {
      g_autofree char *name = g_strdup_printf ("%s-%d", prefix, a + 1);
      if (!ddim_direction_name_is_valid (name, error))
        return NULL;
      DdimDirection *d = ddim_direction_new (name, DDIM_SPACE_H, pool_space ? 1 : 3, hc, hh, hw);
      memcpy (d->data, V + (gsize) a * D, D * sizeof (float));
      set_common (d, DDIM_DIRECTION_PCA, o, hc, hh, hw);
      double sd = sqrt (w[a] / (double) (R - m));
      g_free (d->description);
      d->description = g_strdup_printf ("principal component %d of h over %d samples, "
                                        "t in [%d, %d]", a + 1, n, t_min, t_max);
      d->t_min = t_min;
      d->t_max = t_max;
      d->sigma = sd;
      d->strength_min = -2 * sd;
      d->strength_max = 2 * sd;
      ddim_direction_set_add (set, d);
    }
  return g_steal_pointer (&set);
}
