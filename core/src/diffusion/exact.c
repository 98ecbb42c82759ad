/* Exact and near-exact inversion: fixed-point (Anderson-accelerated),
 * EDICT and BDIA, with their decoders (see ddim/exact.h).
 *
 * States are kept in double between model calls so that a decoder retraces
 * the inversion's model inputs bit for bit wherever it can; the model runs
 * in float32 on the state rounded to float. */
#include <math.h>
#include <string.h>

#include "ddim/encoder.h"
#include "ddim/error.h"
#include "ddim/exact.h"

/* ---- methods and options ---------------------------------------------- */

static const char *const method_names[] = { "ddim", "fixed-point", "edict", "bdia", "optimize",
                                              "hybrid", "encoder" };

const char *
ddim_inversion_method_to_string (DdimInversionMethod m)
{
  g_return_val_if_fail ((guint) m < G_N_ELEMENTS (method_names), "ddim");
  return method_names[m];
}

gboolean
ddim_inversion_method_from_string (const char *s, DdimInversionMethod *m, GError **error)
{
  g_return_val_if_fail (m != NULL, FALSE);
  for (guint i = 0; i < G_N_ELEMENTS (method_names); i++)
    if (g_strcmp0 (s, method_names[i]) == 0)
      {
        *m = (DdimInversionMethod) i;
        return TRUE;
      }
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
               "method '%s' is not one of ddim, fixed-point, edict, bdia, optimize, hybrid, "
               "encoder", s ? s : "(null)");
  return FALSE;
}

gboolean
ddim_inversion_method_is_pair (DdimInversionMethod m)
{
  return m == DDIM_METHOD_EDICT || m == DDIM_METHOD_BDIA;
}

DdimInversionMethod
ddim_inversion_method_decoder (DdimInversionMethod m)
{
  return (m == DDIM_METHOD_FIXED_POINT || m == DDIM_METHOD_OPTIMIZE || m == DDIM_METHOD_HYBRID
          || m == DDIM_METHOD_ENCODER)
           ? DDIM_METHOD_DDIM : m;
}

void
ddim_exact_options_init (DdimExactOptions *o)
{
  g_return_if_fail (o != NULL);
  memset (o, 0, sizeof *o);
  o->fp_max_iterations = DDIM_FIXED_POINT_MAX_ITERATIONS_DEFAULT;
  o->fp_tolerance = DDIM_FIXED_POINT_TOLERANCE_DEFAULT;
  o->fp_anderson_window = DDIM_FIXED_POINT_ANDERSON_WINDOW_DEFAULT;
  o->edict_p = DDIM_EDICT_P_DEFAULT;
  o->bdia_gamma = DDIM_BDIA_GAMMA_DEFAULT;
}

static gboolean
check_unit (double v, const char *name, GError **error)
{
  if (!(v > 0 && v <= 1))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "%s must be in (0, 1], not %g", name,
                   v);
      return FALSE;
    }
  return TRUE;
}

static gboolean
check_fixed_point (const DdimExactOptions *o, GError **error)
{
  if (o->fp_max_iterations < 1)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "fixed-point iterations must be >= 1, not %d", o->fp_max_iterations);
      return FALSE;
    }
  if (!(o->fp_tolerance >= 0) || isinf (o->fp_tolerance))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "fixed-point tolerance must be a number >= 0, not %g", o->fp_tolerance);
      return FALSE;
    }
  if (o->fp_anderson_window < 0 || o->fp_anderson_window > DDIM_FIXED_POINT_ANDERSON_WINDOW_MAX)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the Anderson window must be between 0 and %d, not %d",
                   DDIM_FIXED_POINT_ANDERSON_WINDOW_MAX, o->fp_anderson_window);
      return FALSE;
    }
  return TRUE;
}

gboolean
ddim_exact_options_check (const DdimExactOptions *o, GError **error)
{
  g_return_val_if_fail (o != NULL, FALSE);
  return check_fixed_point (o, error) && check_unit (o->edict_p, "the EDICT mixing weight p", error)
         && check_unit (o->bdia_gamma, "the BDIA gamma", error);
}

/* ---- common machinery --------------------------------------------------- */

typedef struct {
  DdimUNet             *unet;
  const DdimSchedule   *s;
  const DdimRunOptions *o;
  DdimExactStats       *stats;
  int                   h, w, steps, ratio;
  gsize                 count;
  int                  *ts;   /* sampling timesteps, descending */
  float                *in, *out, *epsf;
} Run;

static void
run_clear (Run *r)
{
  g_clear_pointer (&r->ts, g_free);
  g_clear_pointer (&r->in, g_free);
  g_clear_pointer (&r->out, g_free);
  g_clear_pointer (&r->epsf, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Run, run_clear)

static gboolean
run_init (Run *r, DdimUNet *unet, const DdimSchedule *s, const DdimRunOptions *o, int h, int w,
          DdimExactStats *stats, GError **error)
{
  r->unet = unet;
  r->s = s;
  r->o = o;
  r->stats = stats;
  r->h = h;
  r->w = w;
  if (!ddim_unet_check_size (unet, h, w, error))
    return FALSE;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  if (c->in_channels != c->out_channels)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "DDIM needs in_channels == out_channels (model has %d and %d)",
                   c->in_channels, c->out_channels);
      return FALSE;
    }
  r->ts = ddim_schedule_timesteps (s, o->steps, o->spacing, error);
  if (r->ts == NULL)
    return FALSE;
  r->steps = o->steps;
  r->ratio = ddim_schedule_step_ratio (s, o->steps);
  r->count = (gsize) c->out_channels * h * w;
  r->in = g_new (float, r->count);
  r->out = g_new (float, r->count);
  r->epsf = g_new (float, r->count);
  return TRUE;
}

static gboolean
run_cancelled (Run *r, GError **error)
{
  if (r->o->cancellable && g_cancellable_is_cancelled (r->o->cancellable))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED, "cancelled");
      return TRUE;
    }
  return FALSE;
}

static void
run_progress (Run *r, int done, int total)
{
  if (r->o->progress)
    r->o->progress (done, total, r->o->progress_data);
}

/* eps implied by the model at (z, t) for cumulative alpha @alpha (the
 * level of z), whatever the prediction type. */
static gboolean
run_eps (Run *r, const double *z, int t, float alpha, double *eps, GError **error)
{
  for (gsize j = 0; j < r->count; j++)
    r->in[j] = (float) z[j];
  float tf = (float) t;
  if (!ddim_unet_forward (r->unet, r->in, 1, r->h, r->w, &tf, r->out, error))
    return FALSE;
  if (r->stats)
    r->stats->model_evals++;
  ddim_model_output_to_x0_eps (r->s->prediction, alpha, r->in, r->out, r->count, NULL, r->epsf);
  for (gsize j = 0; j < r->count; j++)
    eps[j] = r->epsf[j];
  return TRUE;
}

/* DDIM update of a state at level @a_from to level @a_to with noise eps:
 * z' = A z + B eps (= sqrt(a_to) x0 + sqrt(1 - a_to) eps). */
static void
ddim_coef (double a_from, double a_to, double *A, double *B)
{
  *A = sqrt (a_to / a_from);
  *B = sqrt (1 - a_to) - *A * sqrt (1 - a_from);
}

/* Coefficients of ddim_sample's step at sampling index @i. */
static void
sample_coef (Run *r, int i, double *A, double *B)
{
  int t = r->ts[i];
  ddim_coef (ddim_schedule_alpha (r->s, t), ddim_schedule_alpha (r->s, t - r->ratio), A, B);
}

static void
to_double (const float *src, double *dst, gsize n)
{
  for (gsize j = 0; j < n; j++)
    dst[j] = src[j];
}

static void
to_float (const double *src, float *dst, gsize n)
{
  for (gsize j = 0; j < n; j++)
    dst[j] = (float) src[j];
}

static double
norm2 (const double *v, gsize n)
{
  double s = 0;
  for (gsize j = 0; j < n; j++)
    s += v[j] * v[j];
  return sqrt (s);
}

/* ---- fixed-point -------------------------------------------------------- */

/* Solves the small symmetric system M g = b (n <= window) by Gaussian
 * elimination with partial pivoting; FALSE when singular. */
static gboolean
solve_small (double *M, double *b, int n)
{
  for (int k = 0; k < n; k++)
    {
      int piv = k;
      for (int i = k + 1; i < n; i++)
        if (fabs (M[i * n + k]) > fabs (M[piv * n + k]))
          piv = i;
      if (!(fabs (M[piv * n + k]) > 0))
        return FALSE;
      if (piv != k)
        {
          for (int j = 0; j < n; j++)
            {
              double tmp = M[k * n + j];
              M[k * n + j] = M[piv * n + j];
              M[piv * n + j] = tmp;
            }
          double tmp = b[k];
          b[k] = b[piv];
          b[piv] = tmp;
        }
      for (int i = k + 1; i < n; i++)
        {
          double f = M[i * n + k] / M[k * n + k];
          for (int j = k; j < n; j++)
            M[i * n + j] -= f * M[k * n + j];
          b[i] -= f * b[k];
        }
    }
  for (int k = n - 1; k >= 0; k--)
    {
      double v = b[k];
      for (int j = k + 1; j < n; j++)
        v -= M[k * n + j] * b[j];
      b[k] = v / M[k * n + k];
    }
  for (int k = 0; k < n; k++)
    if (!isfinite (b[k]))
      return FALSE;
  return TRUE;
}

gboolean
ddim_invert_fixed_point (DdimUNet *unet, const DdimSchedule *s, float *x, int height, int width,
                         const DdimExactOptions *exact, const DdimRunOptions *o,
                         DdimExactStats *stats, GError **error)
{
  g_return_val_if_fail (unet && s && x && exact && o, FALSE);
  if (!check_fixed_point (exact, error))
    return FALSE;
  g_auto (Run) r = { 0 };
  if (!run_init (&r, unet, s, o, height, width, stats, error))
    return FALSE;
  gsize n = r.count;
  int m = exact->fp_anderson_window;
  int slots = m + 1;
  g_autofree double *cur = g_new (double, n);   /* x_prev: the known state */
  g_autofree double *z = g_new (double, n);     /* the iterate */
  g_autofree double *eps = g_new (double, n);
  g_autofree double *best = g_new (double, n);  /* Phi of the best iterate */
  g_autofree double *eps_best = g_new (double, n); /* eps at that iterate */
  /* Ring of the last m + 1 (Phi(z_k), f_k = Phi(z_k) - z_k). */
  g_autofree double *G = g_new (double, (gsize) slots * n);
  g_autofree double *F = g_new (double, (gsize) slots * n);
  double M[DDIM_FIXED_POINT_ANDERSON_WINDOW_MAX * DDIM_FIXED_POINT_ANDERSON_WINDOW_MAX];
  double rhs[DDIM_FIXED_POINT_ANDERSON_WINDOW_MAX];
  to_double (x, cur, n);

  for (int k = 0; k < r.steps; k++)
    {
      int i = r.steps - 1 - k, t = r.ts[i];
      float a_t = ddim_schedule_alpha (s, t);
      double A, B;
      sample_coef (&r, i, &A, &B);
      /* Phi(z) = (cur - B eps(z, t)) / A, from the previous step's eps (eps
       * changes slowly along the trajectory), or from z = cur at first. */
      if (k > 0)
        for (gsize j = 0; j < n; j++)
          z[j] = (cur[j] - B * eps_best[j]) / A;
      else
        memcpy (z, cur, sizeof (double) * n);
      int hist = 0, head = 0;          /* entries in the ring, next slot */
      double best_res = INFINITY, prev_fn = INFINITY;
      gboolean converged = FALSE;
      for (int it = 0; it < exact->fp_max_iterations; it++)
        {
          if (run_cancelled (&r, error))
            return FALSE;
          if (!run_eps (&r, z, t, a_t, eps, error))
            return FALSE;
          double *g = G + (gsize) head * n, *f = F + (gsize) head * n;
          for (gsize j = 0; j < n; j++)
            {
              g[j] = (cur[j] - B * eps[j]) / A;
              f[j] = g[j] - z[j];
            }
          double fn = norm2 (f, n), gn = norm2 (g, n);
          double res = fn / MAX (gn, 1e-30);
          if (res < best_res)
            {
              best_res = res;
              memcpy (best, g, sizeof (double) * n);
              memcpy (eps_best, eps, sizeof (double) * n);
            }
          if (res <= exact->fp_tolerance)
            {
              converged = TRUE;
              break;
            }
          if (it + 1 == exact->fp_max_iterations)
            break;
          /* A step that grew the residual restarts the history. */
          if (fn > 2 * prev_fn && hist > 0)
            {
              if (head != 0)
                {
                  memcpy (G, G + (gsize) head * n, sizeof (double) * n);
                  memcpy (F, F + (gsize) head * n, sizeof (double) * n);
                }
              head = 0;
              hist = 0;
              g = G;
              f = F;
            }
          prev_fn = fn;
          hist = MIN (hist + 1, slots);
          int newest = head;
          head = (head + 1) % slots;
          int mk = MIN (m, hist - 1);
          gboolean mixed = FALSE;
          if (mk > 0)
            {
              /* Differences between consecutive entries, newest last:
               * dF_c = F[e_{c+1}] - F[e_c] for the entries e_0 .. e_mk. */
              int e[DDIM_FIXED_POINT_ANDERSON_WINDOW_MAX + 1];
              for (int c = 0; c <= mk; c++)
                e[c] = ((newest - (mk - c)) % slots + slots) % slots;
              for (int a = 0; a < mk; a++)
                {
                  const double *fa1 = F + (gsize) e[a + 1] * n, *fa0 = F + (gsize) e[a] * n;
                  double sr = 0;
                  for (gsize j = 0; j < n; j++)
                    sr += (fa1[j] - fa0[j]) * f[j];
                  rhs[a] = sr;
                  for (int b = a; b < mk; b++)
                    {
                      const double *fb1 = F + (gsize) e[b + 1] * n, *fb0 = F + (gsize) e[b] * n;
                      double sm = 0;
                      for (gsize j = 0; j < n; j++)
                        sm += (fa1[j] - fa0[j]) * (fb1[j] - fb0[j]);
                      M[a * mk + b] = M[b * mk + a] = sm;
                    }
                }
              double tr = 0;
              for (int a = 0; a < mk; a++)
                tr += M[a * mk + a];
              for (int a = 0; a < mk; a++)
                M[a * mk + a] += 1e-12 * tr + 1e-300;
              if (solve_small (M, rhs, mk))
                {
                  for (gsize j = 0; j < n; j++)
                    {
                      double v = g[j];
                      for (int a = 0; a < mk; a++)
                        v -= rhs[a] * (G[(gsize) e[a + 1] * n + j] - G[(gsize) e[a] * n + j]);
                      z[j] = v;
                    }
                  mixed = TRUE;
                }
            }
          if (!mixed)
            memcpy (z, g, sizeof (double) * n);
        }
      memcpy (cur, best, sizeof (double) * n);
      if (stats)
        {
          stats->fp_steps++;
          if (converged)
            stats->fp_steps_converged++;
          stats->fp_max_residual = MAX (stats->fp_max_residual, best_res);
        }
      run_progress (&r, k + 1, r.steps);
    }
  to_float (cur, x, n);
  return TRUE;
}

/* ---- EDICT -------------------------------------------------------------- */

gboolean
ddim_invert_edict (DdimUNet *unet, const DdimSchedule *s, const float *x0, float *x_out,
                   float *y_out, int height, int width, double p, const DdimRunOptions *o,
                   DdimExactStats *stats, GError **error)
{
  g_return_val_if_fail (unet && s && x0 && x_out && y_out && o, FALSE);
  if (!check_unit (p, "the EDICT mixing weight p", error))
    return FALSE;
  g_auto (Run) r = { 0 };
  if (!run_init (&r, unet, s, o, height, width, stats, error))
    return FALSE;
  gsize n = r.count;
  g_autofree double *x = g_new (double, n);
  g_autofree double *y = g_new (double, n);
  g_autofree double *eps = g_new (double, n);
  to_double (x0, x, n);
  memcpy (y, x, sizeof (double) * n);
  double q = 1 - p;

  for (int k = 0; k < r.steps; k++)
    {
      if (run_cancelled (&r, error))
        return FALSE;
      int i = r.steps - 1 - k, t = r.ts[i];
      float a_t = ddim_schedule_alpha (s, t);
      double A, B;
      sample_coef (&r, i, &A, &B);
      /* Undo the mixing layer (y first), then the two coupled steps. */
      for (gsize j = 0; j < n; j++)
        {
          y[j] = (y[j] - q * x[j]) / p;
          x[j] = (x[j] - q * y[j]) / p;
        }
      if (!run_eps (&r, x, t, a_t, eps, error))
        return FALSE;
      for (gsize j = 0; j < n; j++)
        y[j] = (y[j] - B * eps[j]) / A;
      if (!run_eps (&r, y, t, a_t, eps, error))
        return FALSE;
      for (gsize j = 0; j < n; j++)
        x[j] = (x[j] - B * eps[j]) / A;
      run_progress (&r, k + 1, r.steps);
    }
  to_float (x, x_out, n);
  to_float (y, y_out, n);
  return TRUE;
}

gboolean
ddim_decode_edict (DdimUNet *unet, const DdimSchedule *s, const float *x_T, const float *y_T,
                   float *x0_out, int height, int width, double p, const DdimRunOptions *o,
                   DdimExactStats *stats, GError **error)
{
  g_return_val_if_fail (unet && s && x_T && y_T && x0_out && o, FALSE);
  if (!check_unit (p, "the EDICT mixing weight p", error))
    return FALSE;
  g_auto (Run) r = { 0 };
  if (!run_init (&r, unet, s, o, height, width, stats, error))
    return FALSE;
  gsize n = r.count;
  g_autofree double *x = g_new (double, n);
  g_autofree double *y = g_new (double, n);
  g_autofree double *eps = g_new (double, n);
  to_double (x_T, x, n);
  to_double (y_T, y, n);
  double q = 1 - p;

  for (int i = 0; i < r.steps; i++)
    {
      if (run_cancelled (&r, error))
        return FALSE;
      int t = r.ts[i];
      float a_t = ddim_schedule_alpha (s, t);
      double A, B;
      sample_coef (&r, i, &A, &B);
      if (!run_eps (&r, y, t, a_t, eps, error))
        return FALSE;
      for (gsize j = 0; j < n; j++)
        x[j] = A * x[j] + B * eps[j];
      if (!run_eps (&r, x, t, a_t, eps, error))
        return FALSE;
      for (gsize j = 0; j < n; j++)
        {
          y[j] = A * y[j] + B * eps[j];
          x[j] = p * x[j] + q * y[j];
          y[j] = p * y[j] + q * x[j];
        }
      run_progress (&r, i + 1, r.steps);
    }
  to_float (x, x0_out, n);
  return TRUE;
}

/* ---- BDIA --------------------------------------------------------------- */

/* D(z_i -> lower level) - gamma D(z_i -> upper level) = Cz z_i + Ce eps for
 * sampling index i >= 1 (the upper level is that of ts[i - 1]). */
static void
bdia_coef (Run *r, int i, double gamma, double *Cz, double *Ce)
{
  int t = r->ts[i];
  double a = ddim_schedule_alpha (r->s, t);
  double Alo, Blo, Aup, Bup;
  ddim_coef (a, ddim_schedule_alpha (r->s, t - r->ratio), &Alo, &Blo);
  ddim_coef (a, ddim_schedule_alpha (r->s, r->ts[i - 1]), &Aup, &Bup);
  *Cz = Alo - gamma * Aup;
  *Ce = Blo - gamma * Bup;
}

gboolean
ddim_invert_bdia (DdimUNet *unet, const DdimSchedule *s, const float *x0, float *z_out,
                  float *z_pair_out, int height, int width, double gamma,
                  const DdimRunOptions *o, DdimExactStats *stats, GError **error)
{
  g_return_val_if_fail (unet && s && x0 && z_out && z_pair_out && o, FALSE);
  if (!check_unit (gamma, "the BDIA gamma", error))
    return FALSE;
  g_auto (Run) r = { 0 };
  if (!run_init (&r, unet, s, o, height, width, stats, error))
    return FALSE;
  gsize n = r.count;
  /* lo = z_{i+1} (lower level), mid = z_i; the update writes z_{i-1} into lo
   * and the two swap roles. */
  g_autofree double *lo = g_new (double, n);
  g_autofree double *mid = g_new (double, n);
  g_autofree double *eps = g_new (double, n);
  to_double (x0, lo, n);

  /* First step: plain DDIM inversion of the last sampling step, as
   * ddim_invert (eps at the current or target timestep). */
  if (run_cancelled (&r, error))
    return FALSE;
  int t_next = r.ts[r.steps - 1], t_cur = t_next - r.ratio;
  float a_cur = ddim_schedule_alpha (s, t_cur);
  double A, B;
  ddim_coef (a_cur, ddim_schedule_alpha (s, t_next), &A, &B);
  if (!run_eps (&r, lo, o->eps_at == DDIM_EPS_AT_TARGET ? t_next : t_cur, a_cur, eps, error))
    return FALSE;
  for (gsize j = 0; j < n; j++)
    mid[j] = A * lo[j] + B * eps[j];
  run_progress (&r, 1, r.steps);

  /* z_{i-1} = (z_{i+1} - Cz z_i - Ce eps(z_i, t_i)) / gamma, i = N-1 .. 1. */
  for (int k = 1; k < r.steps; k++)
    {
      if (run_cancelled (&r, error))
        return FALSE;
      int i = r.steps - k, t = r.ts[i];
      double Cz, Ce;
      bdia_coef (&r, i, gamma, &Cz, &Ce);
      if (!run_eps (&r, mid, t, ddim_schedule_alpha (s, t), eps, error))
        return FALSE;
      for (gsize j = 0; j < n; j++)
        lo[j] = (lo[j] - Cz * mid[j] - Ce * eps[j]) / gamma;
      double *tmp = lo;
      lo = mid;
      mid = tmp;
      run_progress (&r, k + 1, r.steps);
    }
  /* mid = z_0 (level of ts[0]), lo = z_1. */
  to_float (mid, z_out, n);
  to_float (lo, z_pair_out, n);
  return TRUE;
}

gboolean
ddim_decode_bdia (DdimUNet *unet, const DdimSchedule *s, const float *z_T, const float *z_pair,
                  float *x0_out, int height, int width, double gamma, const DdimRunOptions *o,
                  DdimExactStats *stats, GError **error)
{
  g_return_val_if_fail (unet && s && z_T && z_pair && x0_out && o, FALSE);
  if (!check_unit (gamma, "the BDIA gamma", error))
    return FALSE;
  g_auto (Run) r = { 0 };
  if (!run_init (&r, unet, s, o, height, width, stats, error))
    return FALSE;
  gsize n = r.count;
  g_autofree double *up = g_new (double, n);   /* z_{i-1} (upper level) */
  g_autofree double *mid = g_new (double, n);  /* z_i */
  g_autofree double *eps = g_new (double, n);
  to_double (z_T, up, n);
  to_double (z_pair, mid, n);

  /* z_{i+1} = gamma z_{i-1} + Cz z_i + Ce eps(z_i, t_i), i = 1 .. N-1. */
  for (int i = 1; i < r.steps; i++)
    {
      if (run_cancelled (&r, error))
        return FALSE;
      int t = r.ts[i];
      double Cz, Ce;
      bdia_coef (&r, i, gamma, &Cz, &Ce);
      if (!run_eps (&r, mid, t, ddim_schedule_alpha (s, t), eps, error))
        return FALSE;
      for (gsize j = 0; j < n; j++)
        up[j] = gamma * up[j] + Cz * mid[j] + Ce * eps[j];
      double *tmp = up;
      up = mid;
      mid = tmp;
      run_progress (&r, i, r.steps - 1);
    }
  to_float (mid, x0_out, n);
  return TRUE;
}

/* ---- latents and dispatch ----------------------------------------------- */

gboolean
ddim_latent_get_method (const DdimLatent *l, DdimInversionMethod *m, GError **error)
{
  g_return_val_if_fail (l != NULL && m != NULL, FALSE);
  for (guint i = 0; i < G_N_ELEMENTS (method_names); i++)
    if (g_strcmp0 (l->method, method_names[i]) == 0)
      {
        *m = (DdimInversionMethod) i;
        return TRUE;
      }
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
               "latent was made with method '%s', which this version cannot decode (it "
               "knows ddim, fixed-point, edict, bdia, optimize, hybrid, encoder)",
               l->method ? l->method : "(none)");
  return FALSE;
}

gboolean
ddim_latent_check_method (const DdimLatent *l, DdimInversionMethod expected, GError **error)
{
  g_return_val_if_fail (l != NULL, FALSE);
  DdimInversionMethod m;
  if (!ddim_latent_get_method (l, &m, error))
    return FALSE;
  DdimInversionMethod dec = ddim_inversion_method_decoder (expected);
  if (ddim_inversion_method_decoder (m) != dec)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "latent was made with method '%s'; the '%s' decoder cannot read it",
                   l->method, ddim_inversion_method_to_string (dec));
      return FALSE;
    }
  if (ddim_inversion_method_is_pair (m) && l->latent_pair == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "latent file: method '%s' needs tensor 'latent_pair'", l->method);
      return FALSE;
    }
  double param = m == DDIM_METHOD_EDICT ? l->edict_p : l->bdia_gamma;
  if (ddim_inversion_method_is_pair (m) && !(param > 0 && param <= 1))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "latent file: method '%s' needs metadata '%s', a number in (0, 1]", l->method,
                   m == DDIM_METHOD_EDICT ? "edict_p" : "bdia_gamma");
      return FALSE;
    }
  return TRUE;
}

/* Whether @e can invert for the model of config @c with @o's steps and
 * spacing (@exact_steps: an "encoder" latent must be decoded with the
 * steps it was trained for). */
static gboolean
check_encoder (const DdimEncoder *e, const DdimUNetConfig *c, const DdimRunOptions *o,
               gboolean exact_steps, GError **error)
{
  if (e == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "method 'encoder' needs a trained encoder (see 'ddim train-encoder')");
      return FALSE;
    }
  if (ddim_encoder_get_channels (e) != c->in_channels)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "the encoder takes %d channels but the model %d",
                   ddim_encoder_get_channels (e), c->in_channels);
      return FALSE;
    }
  if (exact_steps
      && (ddim_encoder_get_steps (e) != o->steps || ddim_encoder_get_spacing (e) != o->spacing))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "the encoder was trained for %d steps with %s spacing, not %d steps with %s "
                   "spacing", ddim_encoder_get_steps (e),
                   ddim_spacing_to_string (ddim_encoder_get_spacing (e)), o->steps,
                   ddim_spacing_to_string (o->spacing));
      return FALSE;
    }
  return TRUE;
}

DdimLatent *
ddim_invert_with_method (DdimUNet *unet, const DdimSchedule *s, const float *x0, int height,
                         int width, DdimInversionMethod method, const DdimExactOptions *exact,
                         const DdimRunOptions *o, DdimExactStats *stats, GError **error)
{
  g_return_val_if_fail (unet && s && x0 && o, NULL);
  g_return_val_if_fail ((guint) method < G_N_ELEMENTS (method_names), NULL);
  DdimExactOptions defaults;
  if (exact == NULL)
    {
      ddim_exact_options_init (&defaults);
      exact = &defaults;
    }
  if (!ddim_unet_check_size (unet, height, width, error))
    return NULL;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  g_autoptr (DdimLatent) l = ddim_latent_new (c->in_channels, height, width);
  gsize n = (gsize) c->in_channels * height * width;
  l->steps = o->steps;
  l->spacing = o->spacing;
  g_free (l->method);
  l->method = g_strdup (ddim_inversion_method_to_string (method));
  l->eps_at = DDIM_EPS_AT_TARGET;
  switch (method)
    {
    case DDIM_METHOD_DDIM:
      l->eps_at = o->eps_at;
      memcpy (l->latent, x0, sizeof (float) * n);
      if (!ddim_invert (unet, s, l->latent, 1, height, width, o, error))
        return NULL;
      if (stats)
        stats->model_evals += o->steps;
      break;
    case DDIM_METHOD_FIXED_POINT:
      memcpy (l->latent, x0, sizeof (float) * n);
      if (!ddim_invert_fixed_point (unet, s, l->latent, height, width, exact, o, stats, error))
        return NULL;
      break;
    case DDIM_METHOD_EDICT:
      l->latent_pair = g_new (float, n);
      l->edict_p = exact->edict_p;
      if (!ddim_invert_edict (unet, s, x0, l->latent, l->latent_pair, height, width,
                              exact->edict_p, o, stats, error))
        return NULL;
      break;
    case DDIM_METHOD_ENCODER:
      l->eps_at = o->eps_at;
      if (!check_encoder (exact->encoder, c, o, TRUE, error)
          || !ddim_encoder_encode (exact->encoder, x0, 1, height, width, l->latent, error))
        return NULL;
      if (o->progress)
        o->progress (1, 1, o->progress_data);
      break;
    case DDIM_METHOD_OPTIMIZE:
    case DDIM_METHOD_HYBRID:
      {
        DdimOptimizeOptions oo;
        if (exact->optimize)
          oo = *exact->optimize;
        else
          ddim_optimize_options_init (&oo);
        if (method == DDIM_METHOD_OPTIMIZE && oo.init == DDIM_OPTIMIZE_INIT_DDIM)
          oo.init = DDIM_OPTIMIZE_INIT_NOISE;
        if (method == DDIM_METHOD_HYBRID && oo.init != DDIM_OPTIMIZE_INIT_GIVEN)
          {
            oo.init = DDIM_OPTIMIZE_INIT_DDIM;
            if (exact->encoder)
              {
                /* The encoder's x_T as the start (any steps: it is only
                 * where the descent begins). */
                if (!check_encoder (exact->encoder, c, o, FALSE, error)
                    || !ddim_encoder_encode (exact->encoder, x0, 1, height, width, l->latent,
                                             error))
                  return NULL;
                oo.init = DDIM_OPTIMIZE_INIT_GIVEN;
              }
          }
        else if (oo.init == DDIM_OPTIMIZE_INIT_GIVEN)
          {
            if (exact->optimize_start == NULL)
              {
                g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                             "a given optimisation start needs optimize_start");
                return NULL;
              }
            memcpy (l->latent, exact->optimize_start, sizeof (float) * n);
          }
        l->eps_at = o->eps_at;
        DdimOptimizeStats ost;
        if (!ddim_invert_optimize (unet, s, x0, l->latent, height, width, o, &oo, &ost, error))
          return NULL;
        if (stats)
          stats->model_evals += ost.model_evals + ost.model_vjps;
      }
      break;
    case DDIM_METHOD_BDIA:
    default:
      l->eps_at = o->eps_at;
      l->latent_pair = g_new (float, n);
      l->bdia_gamma = exact->bdia_gamma;
      if (!ddim_invert_bdia (unet, s, x0, l->latent, l->latent_pair, height, width,
                             exact->bdia_gamma, o, stats, error))
        return NULL;
      break;
    }
  return g_steal_pointer (&l);
}

gboolean
ddim_reconstruct_latent (DdimUNet *unet, const DdimSchedule *s, const DdimLatent *l,
                         float *x0_out, const DdimRunOptions *options, DdimExactStats *stats,
                         GError **error)
{
  g_return_val_if_fail (unet && s && l && l->latent && x0_out, FALSE);
  DdimInversionMethod m;
  if (!ddim_latent_get_method (l, &m, error) || !ddim_latent_check_method (l, m, error))
    return FALSE;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  if (l->channels != c->in_channels)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "the latent has %d channels but the model takes %d", l->channels,
                   c->in_channels);
      return FALSE;
    }
  DdimRunOptions o;
  ddim_run_options_init (&o, s);
  o.steps = l->steps;
  o.spacing = l->spacing;
  o.eps_at = l->eps_at;
  if (options)
    {
      o.progress = options->progress;
      o.progress_data = options->progress_data;
      o.cancellable = options->cancellable;
    }
  gsize n = (gsize) l->channels * l->height * l->width;
  switch (ddim_inversion_method_decoder (m))
    {
    case DDIM_METHOD_EDICT:
      return ddim_decode_edict (unet, s, l->latent, l->latent_pair, x0_out, l->height, l->width,
                                l->edict_p, &o, stats, error);
    case DDIM_METHOD_BDIA:
      return ddim_decode_bdia (unet, s, l->latent, l->latent_pair, x0_out, l->height, l->width,
                               l->bdia_gamma, &o, stats, error);
    case DDIM_METHOD_DDIM:
    case DDIM_METHOD_FIXED_POINT:
    default:
      memmove (x0_out, l->latent, sizeof (float) * n);
      if (!ddim_sample (unet, s, x0_out, 1, l->height, l->width, &o, error))
        return FALSE;
      if (stats)
        stats->model_evals += l->steps;
      return TRUE;
    }
}
