/* Finite-difference checks of the ops' backward passes.
 *
 * For each op, inputs, parameters and a cotangent w are random (fixed seeds);
 * the test evaluates a reference forward in double, L = sum (w * f), and
 * compares every coordinate of the analytic (float) gradients with central
 * differences of L in double. The library's float forward is checked against
 * the reference too, so the reference is the op that is differentiated.
 * Error measure per tensor: max |analytic - numeric| / max |numeric|. */
#include <math.h>
#include <string.h>

#include <glib.h>

#include "ops/ops.h"

#define FD_STEP   1e-4
#define GRAD_TOL  2e-5   /* float analytic gradients against double FD */
#define FWD_TOL   1e-5   /* float forward against the double reference */
#define PREFILL   0.25f  /* parameter grads start here: they must accumulate */
#define GARBAGE   7.f    /* input grads start here: they must be overwritten */

/* ---- bookkeeping ----------------------------------------------------- */

typedef struct {
  char   op[32];
  double max_err;
} Report;

static Report reports[32];
static int    n_reports;

static void
report (const char *op, double err)
{
  for (int i = 0; i < n_reports; i++)
    if (strcmp (reports[i].op, op) == 0)
      {
        reports[i].max_err = MAX (reports[i].max_err, err);
        return;
      }
  g_assert_cmpint (n_reports, <, (int) G_N_ELEMENTS (reports));
  g_strlcpy (reports[n_reports].op, op, sizeof reports[n_reports].op);
  reports[n_reports++].max_err = err;
}

/* A tensor in both precisions: f is what the library sees, d (equal values)
 * what the reference sees and what the finite differences perturb. */
typedef struct {
  float  *f;
  double *d;
  gsize   n;
} T;

static void
t_rand (T *t, gsize n, GRand *r, double lo, double hi)
{
  t->n = n;
  t->f = g_new (float, MAX (n, 1));
  t->d = g_new (double, MAX (n, 1));
  for (gsize i = 0; i < n; i++)
    {
      t->f[i] = (float) g_rand_double_range (r, lo, hi);
      t->d[i] = t->f[i];
    }
}

static void
t_free (T *t)
{
  g_free (t->f);
  g_free (t->d);
  memset (t, 0, sizeof *t);
}

static float *
filled (gsize n, float v)
{
  float *p = g_new (float, MAX (n, 1));
  for (gsize i = 0; i < n; i++)
    p[i] = v;
  return p;
}

static double
dot (const double *a, const double *b, gsize n)
{
  double s = 0;
  for (gsize i = 0; i < n; i++)
    s += a[i] * b[i];
  return s;
}

/* max |a - b| / max |b|, b in double. */
static double
rel_err_fd (const float *a, const double *b, gsize n)
{
  double e = 0, m = 0;
  for (gsize i = 0; i < n; i++)
    {
      e = MAX (e, fabs ((double) a[i] - b[i]));
      m = MAX (m, fabs (b[i]));
    }
  return e / MAX (m, 1e-30);
}

static double
rel_err_ff (const float *a, const float *b, gsize n)
{
  double e = 0, m = 0;
  for (gsize i = 0; i < n; i++)
    {
      e = MAX (e, fabs ((double) a[i] - b[i]));
      m = MAX (m, fabs ((double) b[i]));
    }
  return e / MAX (m, 1e-30);
}

typedef double (*LossFn) (gconstpointer ctx);

/* Compares @analytic (minus @offset) with central differences of @loss with
 * respect to every coordinate of @param. The error is relative to
 * max (max |numeric|, @floor): a nonzero @floor is for gradients that are
 * exactly zero (then it is an absolute error on the scale of the others). */
static void
check_grad_floor (const char *op, const char *what, LossFn loss, gconstpointer ctx, T *param,
                  const float *analytic, float offset, double floor)
{
  double *num = g_new (double, MAX (param->n, 1));
  for (gsize i = 0; i < param->n; i++)
    {
      double keep = param->d[i];
      double h = FD_STEP * MAX (1.0, fabs (keep));
      param->d[i] = keep + h;
      double lp = loss (ctx);
      param->d[i] = keep - h;
      double lm = loss (ctx);
      param->d[i] = keep;
      num[i] = (lp - lm) / (2 * h);
    }
  float *a = g_new (float, MAX (param->n, 1));
  for (gsize i = 0; i < param->n; i++)
    a[i] = analytic[i] - offset;
  double err = rel_err_fd (a, num, param->n);
  if (floor > 0)
    {
      double m = 0;
      for (gsize i = 0; i < param->n; i++)
        m = MAX (m, fabs (num[i]));
      err = err * m / MAX (m, floor);
    }
  g_test_message ("%-10s %-12s max rel err %.3g", op, what, err);
  report (op, err);
  g_assert_cmpfloat (err, <, GRAD_TOL);
  g_free (a);
  g_free (num);
}

static void
check_grad (const char *op, const char *what, LossFn loss, gconstpointer ctx, T *param,
            const float *analytic, float offset)
{
  check_grad_floor (op, what, loss, ctx, param, analytic, offset, 0);
}

static void
check_forward (const char *op, const float *y, const double *yref, gsize n)
{
  double err = rel_err_fd (y, yref, n);
  g_test_message ("%-10s forward      max rel err %.3g", op, err);
  g_assert_cmpfloat (err, <, FWD_TOL);
}

static void
check_same (const char *what, const float *a, const float *b, gsize n, double tol)
{
  double err = rel_err_ff (a, b, n);
  g_test_message ("%-24s rel diff %.3g", what, err);
  g_assert_cmpfloat (err, <=, tol);
}

/* ---- conv2d ------------------------------------------------------------ */

typedef struct {
  int n, cin, h, w, cout, k, stride, pt, pb, oh, ow;
  T   x, wt, b, wy;
} Conv;

static void
conv_ref (const Conv *c, double *y)
{
  for (int b = 0; b < c->n; b++)
    for (int co = 0; co < c->cout; co++)
      for (int oy = 0; oy < c->oh; oy++)
        for (int ox = 0; ox < c->ow; ox++)
          {
            double s = c->b.d[co];
            for (int ci = 0; ci < c->cin; ci++)
              for (int ky = 0; ky < c->k; ky++)
                for (int kx = 0; kx < c->k; kx++)
                  {
                    int iy = oy * c->stride - c->pt + ky, ix = ox * c->stride - c->pt + kx;
                    if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w)
                      continue;
                    s += c->wt.d[((co * c->cin + ci) * c->k + ky) * c->k + kx]
                         * c->x.d[((gsize) (b * c->cin + ci) * c->h + iy) * c->w + ix];
                  }
            y[((gsize) (b * c->cout + co) * c->oh + oy) * c->ow + ox] = s;
          }
}

static double
conv_loss (gconstpointer ctx)
{
  const Conv *c = ctx;
  double *y = g_new (double, c->wy.n);
  conv_ref (c, y);
  double l = dot (y, c->wy.d, c->wy.n);
  g_free (y);
  return l;
}

static void
conv_setup (Conv *c, guint32 seed, int n, int cin, int h, int w, int cout, int k, int stride,
            int pt, int pb)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  *c = (Conv) { .n = n, .cin = cin, .h = h, .w = w, .cout = cout, .k = k, .stride = stride,
                .pt = pt, .pb = pb, .oh = ddim_conv2d_out_size (h, k, stride, pt, pb),
                .ow = ddim_conv2d_out_size (w, k, stride, pt, pb) };
  t_rand (&c->x, (gsize) n * cin * h * w, r, -1, 1);
  t_rand (&c->wt, (gsize) cout * cin * k * k, r, -0.5, 0.5);
  t_rand (&c->b, cout, r, -0.5, 0.5);
  t_rand (&c->wy, (gsize) n * cout * c->oh * c->ow, r, -1, 1);
}

static void
conv_free (Conv *c)
{
  t_free (&c->x);
  t_free (&c->wt);
  t_free (&c->b);
  t_free (&c->wy);
}

static void
conv_case (const char *op, guint32 seed, int n, int cin, int h, int w, int cout, int k,
           int stride, int pt, int pb)
{
  Conv c;
  conv_setup (&c, seed, n, cin, h, w, cout, k, stride, pt, pb);
  DdimArena arena;
  ddim_arena_init (&arena);

  float *y = g_new (float, c.wy.n);
  double *yref = g_new (double, c.wy.n);
  ddim_conv2d_forward (c.x.f, n, cin, h, w, c.wt.f, c.b.f, cout, k, stride, pt, pb, y, &arena);
  conv_ref (&c, yref);
  check_forward (op, y, yref, c.wy.n);

  float *dx = filled (c.x.n, GARBAGE);
  float *dw = filled (c.wt.n, PREFILL);
  float *db = filled (c.b.n, PREFILL);
  ddim_conv2d_backward (c.x.f, n, cin, h, w, c.wt.f, cout, k, stride, pt, pb, c.wy.f,
                        dx, dw, db, &arena);
  g_assert_cmpuint (arena.used, ==, 0);
  check_grad (op, "dx", conv_loss, &c, &c.x, dx, 0.f);
  check_grad (op, "dweight", conv_loss, &c, &c.wt, dw, PREFILL);
  check_grad (op, "dbias", conv_loss, &c, &c.b, db, PREFILL);

  /* NULL gradients: each alone gives the same result. */
  float *dx1 = filled (c.x.n, GARBAGE);
  float *dw1 = filled (c.wt.n, PREFILL);
  float *db1 = filled (c.b.n, PREFILL);
  ddim_conv2d_backward (c.x.f, n, cin, h, w, c.wt.f, cout, k, stride, pt, pb, c.wy.f,
                        dx1, NULL, NULL, &arena);
  ddim_conv2d_backward (NULL, n, cin, h, w, NULL, cout, k, stride, pt, pb, c.wy.f,
                        NULL, NULL, db1, &arena);
  ddim_conv2d_backward (c.x.f, n, cin, h, w, NULL, cout, k, stride, pt, pb, c.wy.f,
                        NULL, dw1, NULL, &arena);
  check_same ("conv dx alone", dx1, dx, c.x.n, 0);
  check_same ("conv dweight alone", dw1, dw, c.wt.n, 0);
  check_same ("conv dbias alone", db1, db, c.b.n, 0);

  g_free (dx1);
  g_free (dw1);
  g_free (db1);
  g_free (dx);
  g_free (dw);
  g_free (db);
  g_free (y);
  g_free (yref);
  ddim_arena_clear (&arena);
  conv_free (&c);
}

static void
test_conv_3x3_s1 (void)
{
  conv_case ("conv3x3s1", 11, 2, 3, 5, 6, 4, 3, 1, 1, 1);
}

static void
test_conv_3x3_s2_p01 (void)
{
  conv_case ("conv3x3s2", 12, 2, 3, 7, 6, 4, 3, 2, 0, 1);
}

static void
test_conv_3x3_s2_p11 (void)
{
  conv_case ("conv3x3s2", 13, 1, 3, 6, 7, 2, 3, 2, 1, 1);
}

static void
test_conv_1x1 (void)
{
  conv_case ("conv1x1", 14, 2, 4, 4, 5, 3, 1, 1, 0, 0);
  /* Not the pointwise fast path. */
  conv_case ("conv1x1s2", 15, 2, 3, 5, 5, 2, 1, 2, 0, 0);
}

/* Banded col2im: every band size gives the one-band result. */
static void
test_conv_bands (void)
{
  static const int cfg[][4] = { /* k, stride, pt, pb */
    { 3, 1, 1, 1 }, { 3, 2, 0, 1 }, { 3, 2, 1, 1 }, { 1, 2, 0, 0 },
  };
  for (guint t = 0; t < G_N_ELEMENTS (cfg); t++)
    {
      Conv c;
      conv_setup (&c, 20 + t, 2, 3, 9, 8, 4, cfg[t][0], cfg[t][1], cfg[t][2], cfg[t][3]);
      DdimArena arena;
      ddim_arena_init (&arena);
      float *dx0 = filled (c.x.n, GARBAGE), *dw0 = filled (c.wt.n, 0), *db0 = filled (c.b.n, 0);
      ddim_conv2d_backward_band (c.x.f, c.n, c.cin, c.h, c.w, c.wt.f, c.cout, c.k, c.stride,
                                 c.pt, c.pb, c.wy.f, dx0, dw0, db0, c.oh, &arena);
      for (int rows = 0; rows <= c.oh; rows++)
        {
          float *dx = filled (c.x.n, GARBAGE), *dw = filled (c.wt.n, 0),
                *db = filled (c.b.n, 0);
          ddim_conv2d_backward_band (c.x.f, c.n, c.cin, c.h, c.w, c.wt.f, c.cout, c.k,
                                     c.stride, c.pt, c.pb, c.wy.f, dx, dw, db, rows, &arena);
          g_assert_cmpuint (arena.used, ==, 0);
          check_same ("conv band dx", dx, dx0, c.x.n, 1e-6);
          check_same ("conv band dweight", dw, dw0, c.wt.n, 1e-6);
          check_same ("conv band dbias", db, db0, c.b.n, 0);
          g_free (dx);
          g_free (dw);
          g_free (db);
        }
      g_free (dx0);
      g_free (dw0);
      g_free (db0);
      ddim_arena_clear (&arena);
      conv_free (&c);
    }
}

/* ---- group norm -------------------------------------------------------- */

typedef struct {
  int      n, c, hw, groups;
  float    eps;
  gboolean silu;
  T        x, gamma, beta, wy;
} GN;

static void
gn_ref (int n, int c, int hw, int groups, double eps, const double *x, const double *gamma,
        const double *beta, gboolean silu, double *y)
{
  int cpg = c / groups;
  gsize cnt = (gsize) cpg * hw;
  for (int b = 0; b < n; b++)
    for (int g = 0; g < groups; g++)
      {
        gsize off = ((gsize) b * c + (gsize) g * cpg) * hw;
        double m = 0, v = 0;
        for (gsize i = 0; i < cnt; i++)
          m += x[off + i];
        m /= cnt;
        for (gsize i = 0; i < cnt; i++)
          v += (x[off + i] - m) * (x[off + i] - m);
        v /= cnt;
        double inv = 1 / sqrt (v + eps);
        for (gsize i = 0; i < cnt; i++)
          {
            int ch = g * cpg + (int) (i / hw);
            double t = (x[off + i] - m) * inv * gamma[ch] + beta[ch];
            y[off + i] = silu ? t / (1 + exp (-t)) : t;
          }
      }
}

static double
gn_loss (gconstpointer ctx)
{
  const GN *g = ctx;
  double *y = g_new (double, g->x.n);
  gn_ref (g->n, g->c, g->hw, g->groups, g->eps, g->x.d, g->gamma.d, g->beta.d, g->silu, y);
  double l = dot (y, g->wy.d, g->wy.n);
  g_free (y);
  return l;
}

static void
gn_case (gboolean silu)
{
  const char *op = silu ? "gn+silu" : "groupnorm";
  g_autoptr (GRand) r = g_rand_new_with_seed (silu ? 31 : 32);
  GN g = { .n = 2, .c = 6, .hw = 5, .groups = 3, .eps = 1e-5f, .silu = silu };
  gsize total = (gsize) g.n * g.c * g.hw;
  t_rand (&g.x, total, r, -1, 2);
  t_rand (&g.gamma, g.c, r, 0.5, 1.5);
  t_rand (&g.beta, g.c, r, -0.5, 0.5);
  t_rand (&g.wy, total, r, -1, 1);

  float *y = g_new (float, total);
  double *yref = g_new (double, total);
  ddim_group_norm_forward (g.x.f, g.n, g.c, g.hw, g.groups, g.eps, g.gamma.f, g.beta.f, silu, y);
  gn_ref (g.n, g.c, g.hw, g.groups, g.eps, g.x.d, g.gamma.d, g.beta.d, silu, yref);
  check_forward (op, y, yref, total);

  float *dx = filled (total, GARBAGE);
  float *dgamma = filled (g.c, PREFILL), *dbeta = filled (g.c, PREFILL);
  ddim_group_norm_backward (g.x.f, g.n, g.c, g.hw, g.groups, g.eps, g.gamma.f, g.beta.f, silu,
                            g.wy.f, dx, dgamma, dbeta);
  check_grad (op, "dx", gn_loss, &g, &g.x, dx, 0.f);
  check_grad (op, "dgamma", gn_loss, &g, &g.gamma, dgamma, PREFILL);
  check_grad (op, "dbeta", gn_loss, &g, &g.beta, dbeta, PREFILL);

  /* dx aliasing dy; parameter grads alone. */
  float *buf = g_memdup2 (g.wy.f, total * sizeof (float));
  ddim_group_norm_backward (g.x.f, g.n, g.c, g.hw, g.groups, g.eps, g.gamma.f, g.beta.f, silu,
                            buf, buf, NULL, NULL);
  check_same ("gn dx in place of dy", buf, dx, total, 0);
  float *dgamma1 = filled (g.c, PREFILL), *dbeta1 = filled (g.c, PREFILL);
  ddim_group_norm_backward (g.x.f, g.n, g.c, g.hw, g.groups, g.eps, g.gamma.f, g.beta.f, silu,
                            g.wy.f, NULL, dgamma1, dbeta1);
  check_same ("gn dgamma alone", dgamma1, dgamma, g.c, 0);
  check_same ("gn dbeta alone", dbeta1, dbeta, g.c, 0);

  g_free (dgamma1);
  g_free (dbeta1);
  g_free (buf);
  g_free (dx);
  g_free (dgamma);
  g_free (dbeta);
  g_free (y);
  g_free (yref);
  t_free (&g.x);
  t_free (&g.gamma);
  t_free (&g.beta);
  t_free (&g.wy);
}

static void
test_group_norm (void)
{
  gn_case (FALSE);
}

static void
test_group_norm_silu (void)
{
  gn_case (TRUE);
}

/* ---- SiLU ---------------------------------------------------------------- */

typedef struct {
  T x, wy;
} Silu;

static double
silu_loss (gconstpointer ctx)
{
  const Silu *s = ctx;
  double l = 0;
  for (gsize i = 0; i < s->x.n; i++)
    l += s->wy.d[i] * s->x.d[i] / (1 + exp (-s->x.d[i]));
  return l;
}

static void
test_silu (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (41);
  Silu s;
  gsize n = 64;
  t_rand (&s.x, n, r, -6, 6);
  t_rand (&s.wy, n, r, -1, 1);

  float *y = g_memdup2 (s.x.f, n * sizeof (float));
  double *yref = g_new (double, n);
  ddim_silu_forward (y, n);
  for (gsize i = 0; i < n; i++)
    yref[i] = s.x.d[i] / (1 + exp (-s.x.d[i]));
  check_forward ("silu", y, yref, n);

  float *dx = filled (n, GARBAGE);
  ddim_silu_backward (s.x.f, s.wy.f, dx, n);
  check_grad ("silu", "dx", silu_loss, &s, &s.x, dx, 0.f);
  float *buf = g_memdup2 (s.wy.f, n * sizeof (float));
  ddim_silu_backward (s.x.f, buf, buf, n);
  check_same ("silu dx in place of dy", buf, dx, n, 0);

  g_free (buf);
  g_free (dx);
  g_free (y);
  g_free (yref);
  t_free (&s.x);
  t_free (&s.wy);
}

/* ---- linear --------------------------------------------------------------- */

typedef struct {
  int n, in, out;
  T   x, wt, b, wy;
} Lin;

static void
lin_ref (const Lin *l, double *y)
{
  for (int b = 0; b < l->n; b++)
    for (int o = 0; o < l->out; o++)
      {
        double s = l->b.d[o];
        for (int i = 0; i < l->in; i++)
          s += l->wt.d[o * l->in + i] * l->x.d[b * l->in + i];
        y[b * l->out + o] = s;
      }
}

static double
lin_loss (gconstpointer ctx)
{
  const Lin *l = ctx;
  double *y = g_new (double, l->wy.n);
  lin_ref (l, y);
  double s = dot (y, l->wy.d, l->wy.n);
  g_free (y);
  return s;
}

static void
test_linear (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (51);
  Lin l = { .n = 3, .in = 7, .out = 5 };
  t_rand (&l.x, l.n * l.in, r, -1, 1);
  t_rand (&l.wt, l.out * l.in, r, -0.5, 0.5);
  t_rand (&l.b, l.out, r, -0.5, 0.5);
  t_rand (&l.wy, l.n * l.out, r, -1, 1);

  float *y = g_new (float, l.wy.n);
  double *yref = g_new (double, l.wy.n);
  ddim_linear_forward (l.x.f, l.n, l.in, l.wt.f, l.b.f, l.out, y);
  lin_ref (&l, yref);
  check_forward ("linear", y, yref, l.wy.n);

  float *dx = filled (l.x.n, GARBAGE), *dw = filled (l.wt.n, PREFILL),
        *db = filled (l.b.n, PREFILL);
  ddim_linear_backward (l.x.f, l.n, l.in, l.wt.f, l.out, l.wy.f, dx, dw, db);
  check_grad ("linear", "dx", lin_loss, &l, &l.x, dx, 0.f);
  check_grad ("linear", "dweight", lin_loss, &l, &l.wt, dw, PREFILL);
  check_grad ("linear", "dbias", lin_loss, &l, &l.b, db, PREFILL);

  float *dx1 = filled (l.x.n, GARBAGE);
  ddim_linear_backward (NULL, l.n, l.in, l.wt.f, l.out, l.wy.f, dx1, NULL, NULL);
  check_same ("linear dx alone", dx1, dx, l.x.n, 0);

  g_free (dx1);
  g_free (dx);
  g_free (dw);
  g_free (db);
  g_free (y);
  g_free (yref);
  t_free (&l.x);
  t_free (&l.wt);
  t_free (&l.b);
  t_free (&l.wy);
}

/* ---- attention ------------------------------------------------------------ */

enum { A_GN_GAMMA, A_GN_BETA, A_QW, A_QB, A_KW, A_KB, A_VW, A_VB, A_OW, A_OB, A_N };
static const char *const attn_names[A_N] = {
  "dgn_gamma", "dgn_beta", "dq_w", "dq_b", "dk_w", "dk_b", "dv_w", "dv_b", "do_w", "do_b",
};

typedef struct {
  int      n, c, hw, heads, groups;
  float    eps, rescale;
  gboolean gn;
  T        x, wy, prm[A_N];
} Attn;

static void
attn_params (const Attn *a, DdimAttentionParams *p)
{
  *p = (DdimAttentionParams) {
    .gn_gamma = a->gn ? a->prm[A_GN_GAMMA].f : NULL,
    .gn_beta = a->gn ? a->prm[A_GN_BETA].f : NULL,
    .gn_groups = a->groups, .gn_eps = a->eps,
    .q_w = a->prm[A_QW].f, .q_b = a->prm[A_QB].f,
    .k_w = a->prm[A_KW].f, .k_b = a->prm[A_KB].f,
    .v_w = a->prm[A_VW].f, .v_b = a->prm[A_VB].f,
    .o_w = a->prm[A_OW].f, .o_b = a->prm[A_OB].f,
    .heads = a->heads, .rescale = a->rescale,
  };
}

/* W[c, c] X[c, P] + b */
static void
proj_ref (const double *w, const double *b, const double *x, int c, int P, double *y)
{
  for (int o = 0; o < c; o++)
    for (int i = 0; i < P; i++)
      {
        double s = b[o];
        for (int k = 0; k < c; k++)
          s += w[o * c + k] * x[k * P + i];
        y[o * P + i] = s;
      }
}

static void
attn_ref (const Attn *a, double *out)
{
  int c = a->c, hw = a->hw, d = c / a->heads;
  double scale = 1.f / sqrtf ((float) d);
  gsize plane = (gsize) c * hw;
  double *xn = g_new (double, plane), *q = g_new (double, plane), *k = g_new (double, plane),
         *v = g_new (double, plane), *o = g_new (double, plane), *s = g_new (double, hw);
  for (int b = 0; b < a->n; b++)
    {
      const double *xb = a->x.d + b * plane;
      if (a->gn)
        gn_ref (1, c, hw, a->groups, a->eps, xb, a->prm[A_GN_GAMMA].d, a->prm[A_GN_BETA].d,
                FALSE, xn);
      else
        memcpy (xn, xb, plane * sizeof (double));
      proj_ref (a->prm[A_QW].d, a->prm[A_QB].d, xn, c, hw, q);
      proj_ref (a->prm[A_KW].d, a->prm[A_KB].d, xn, c, hw, k);
      proj_ref (a->prm[A_VW].d, a->prm[A_VB].d, xn, c, hw, v);
      for (int h = 0; h < a->heads; h++)
        for (int i = 0; i < hw; i++)
          {
            double m = -INFINITY, sum = 0;
            for (int j = 0; j < hw; j++)
              {
                double t = 0;
                for (int e = 0; e < d; e++)
                  t += q[(h * d + e) * hw + i] * k[(h * d + e) * hw + j];
                s[j] = t * scale;
                m = MAX (m, s[j]);
              }
            for (int j = 0; j < hw; j++)
              sum += (s[j] = exp (s[j] - m));
            for (int e = 0; e < d; e++)
              {
                double t = 0;
                for (int j = 0; j < hw; j++)
                  t += v[(h * d + e) * hw + j] * s[j] / sum;
                o[(h * d + e) * hw + i] = t;
              }
          }
      proj_ref (a->prm[A_OW].d, a->prm[A_OB].d, o, c, hw, out + b * plane);
      for (gsize i = 0; i < plane; i++)
        out[b * plane + i] = (out[b * plane + i] + xb[i]) / a->rescale;
    }
  g_free (xn);
  g_free (q);
  g_free (k);
  g_free (v);
  g_free (o);
  g_free (s);
}

static double
attn_loss (gconstpointer ctx)
{
  const Attn *a = ctx;
  double *y = g_new (double, a->x.n);
  attn_ref (a, y);
  double l = dot (y, a->wy.d, a->wy.n);
  g_free (y);
  return l;
}

static void
attn_setup (Attn *a, guint32 seed, int heads, gboolean gn, int hw, float rescale)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  *a = (Attn) { .n = 2, .c = 8, .hw = hw, .heads = heads, .groups = 4, .eps = 1e-5f,
                .rescale = rescale, .gn = gn };
  gsize total = (gsize) a->n * a->c * a->hw;
  t_rand (&a->x, total, r, -1, 1.5);
  t_rand (&a->wy, total, r, -1, 1);
  for (int i = 0; i < A_N; i++)
    {
      gboolean vec = (i == A_GN_GAMMA || i == A_GN_BETA || i == A_QB || i == A_KB ||
                      i == A_VB || i == A_OB);
      if (i == A_GN_GAMMA)
        t_rand (&a->prm[i], a->c, r, 0.5, 1.5);
      else
        t_rand (&a->prm[i], vec ? (gsize) a->c : (gsize) a->c * a->c, r, -0.6, 0.6);
    }
}

static void
attn_free (Attn *a)
{
  t_free (&a->x);
  t_free (&a->wy);
  for (int i = 0; i < A_N; i++)
    t_free (&a->prm[i]);
}

static void
attn_grads (float **g, DdimAttentionGrads *gr)
{
  *gr = (DdimAttentionGrads) { g[A_GN_GAMMA], g[A_GN_BETA], g[A_QW], g[A_QB], g[A_KW],
                               g[A_KB], g[A_VW], g[A_VB], g[A_OW], g[A_OB] };
}

static void
attn_case (const char *op, guint32 seed, int heads, gboolean gn, int hw, float rescale)
{
  Attn a;
  attn_setup (&a, seed, heads, gn, hw, rescale);
  DdimAttentionParams p;
  attn_params (&a, &p);
  DdimArena arena;
  ddim_arena_init (&arena);
  gsize total = a.x.n;

  float *y = g_memdup2 (a.x.f, total * sizeof (float));
  double *yref = g_new (double, total);
  ddim_attention_forward (y, a.n, a.c, a.hw, &p, &arena);
  attn_ref (&a, yref);
  check_forward (op, y, yref, total);

  float *dx = filled (total, GARBAGE);
  float *g[A_N];
  for (int i = 0; i < A_N; i++)
    g[i] = filled (a.prm[i].n, PREFILL);
  DdimAttentionGrads gr;
  attn_grads (g, &gr);
  ddim_attention_backward (a.x.f, a.n, a.c, a.hw, &p, a.wy.f, dx, &gr, &arena);
  g_assert_cmpuint (arena.used, ==, 0);
  check_grad (op, "dx", attn_loss, &a, &a.x, dx, 0.f);
  /* The key bias adds q_i . b_k to a whole row of scores: the softmax
   * cancels it and its exact gradient is 0; judge it on the scale of dq_b. */
  double dqb_scale = 0;
  for (gsize j = 0; j < a.prm[A_QB].n; j++)
    dqb_scale = MAX (dqb_scale, fabs (g[A_QB][j] - PREFILL));
  for (int i = gn ? 0 : A_QW; i < A_N; i++)
    check_grad_floor (op, attn_names[i], attn_loss, &a, &a.prm[i], g[i], PREFILL,
                      i == A_KB ? dqb_scale : 0);
  if (!gn)
    for (int i = A_GN_GAMMA; i <= A_GN_BETA; i++)
      for (gsize j = 0; j < a.prm[i].n; j++)
        g_assert_cmpfloat (g[i][j], ==, PREFILL);

  /* No grads struct; dx aliasing x; dx aliasing dy. */
  float *dx1 = filled (total, GARBAGE);
  ddim_attention_backward (a.x.f, a.n, a.c, a.hw, &p, a.wy.f, dx1, NULL, &arena);
  check_same ("attention dx, grads NULL", dx1, dx, total, 0);
  float *buf = g_memdup2 (a.x.f, total * sizeof (float));
  ddim_attention_backward (buf, a.n, a.c, a.hw, &p, a.wy.f, buf, NULL, &arena);
  check_same ("attention dx in place of x", buf, dx, total, 0);
  memcpy (buf, a.wy.f, total * sizeof (float));
  ddim_attention_backward (a.x.f, a.n, a.c, a.hw, &p, buf, buf, NULL, &arena);
  check_same ("attention dx in place of dy", buf, dx, total, 0);

  /* Parameter grads without dx. */
  float *g1[A_N];
  for (int i = 0; i < A_N; i++)
    g1[i] = filled (a.prm[i].n, PREFILL);
  DdimAttentionGrads gr1;
  attn_grads (g1, &gr1);
  ddim_attention_backward (a.x.f, a.n, a.c, a.hw, &p, a.wy.f, NULL, &gr1, &arena);
  for (int i = 0; i < A_N; i++)
    check_same (attn_names[i], g1[i], g[i], a.prm[i].n, 0);

  /* Blocks of query rows give the one-block result. */
  for (int rows = 1; rows <= a.hw; rows++)
    {
      float *g2[A_N];
      for (int i = 0; i < A_N; i++)
        g2[i] = filled (a.prm[i].n, PREFILL);
      DdimAttentionGrads gr2;
      attn_grads (g2, &gr2);
      float *dx2 = filled (total, GARBAGE);
      ddim_attention_backward_block (a.x.f, a.n, a.c, a.hw, &p, a.wy.f, dx2, &gr2, rows,
                                     &arena);
      g_assert_cmpuint (arena.used, ==, 0);
      check_same ("attention block dx", dx2, dx, total, 1e-6);
      for (int i = 0; i < A_N; i++)
        {
          check_same (attn_names[i], g2[i], g[i], a.prm[i].n, 1e-6);
          g_free (g2[i]);
        }
      g_free (dx2);
    }

  for (int i = 0; i < A_N; i++)
    {
      g_free (g[i]);
      g_free (g1[i]);
    }
  g_free (buf);
  g_free (dx1);
  g_free (dx);
  g_free (y);
  g_free (yref);
  ddim_arena_clear (&arena);
  attn_free (&a);
}

static void
test_attention_1head_gn (void)
{
  attn_case ("attn1h+gn", 61, 1, TRUE, 6, 1.f);
}

static void
test_attention_2heads_gn (void)
{
  attn_case ("attn2h+gn", 62, 2, TRUE, 9, 2.f);
}

static void
test_attention_1head (void)
{
  attn_case ("attn1h", 63, 1, FALSE, 9, 1.f);
}

static void
test_attention_2heads (void)
{
  attn_case ("attn2h", 64, 2, FALSE, 6, 1.5f);
}

/* ---- upsample ------------------------------------------------------------ */

typedef struct {
  int n, c, h, w;
  T   x, wy;
} Up;

static double
up_loss (gconstpointer ctx)
{
  const Up *u = ctx;
  double l = 0;
  int ow = 2 * u->w;
  for (int p = 0; p < u->n * u->c; p++)
    for (int i = 0; i < 2 * u->h; i++)
      for (int j = 0; j < ow; j++)
        l += u->wy.d[((gsize) p * 2 * u->h + i) * ow + j]
             * u->x.d[((gsize) p * u->h + i / 2) * u->w + j / 2];
  return l;
}

static void
test_upsample (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (71);
  Up u = { .n = 2, .c = 3, .h = 3, .w = 4 };
  gsize nx = (gsize) u.n * u.c * u.h * u.w;
  t_rand (&u.x, nx, r, -1, 1);
  t_rand (&u.wy, 4 * nx, r, -1, 1);
  float *y = g_new (float, 4 * nx);
  double *yref = g_new (double, 4 * nx);
  ddim_upsample_nearest2x_forward (u.x.f, u.n, u.c, u.h, u.w, y);
  for (int p = 0; p < u.n * u.c; p++)
    for (int i = 0; i < 2 * u.h; i++)
      for (int j = 0; j < 2 * u.w; j++)
        yref[((gsize) p * 2 * u.h + i) * 2 * u.w + j] = u.x.d[((gsize) p * u.h + i / 2) * u.w + j / 2];
  check_forward ("upsample", y, yref, 4 * nx);
  g_free (y);
  g_free (yref);

  float *dx = filled (nx, GARBAGE);
  ddim_upsample_nearest2x_backward (u.wy.f, u.n, u.c, u.h, u.w, dx);
  check_grad ("upsample", "dx", up_loss, &u, &u.x, dx, 0.f);
  g_free (dx);
  t_free (&u.x);
  t_free (&u.wy);
}

/* ---- 2x2 average pooling ----------------------------------------------- */

static double
pool_loss (gconstpointer ctx)
{
  const Up *u = ctx;
  int oh = u->h / 2, ow = u->w / 2;
  double l = 0;
  for (int p = 0; p < u->n * u->c; p++)
    for (int i = 0; i < oh; i++)
      for (int j = 0; j < ow; j++)
        {
          const double *x = u->x.d + (gsize) p * u->h * u->w;
          double avg = (x[(2 * i) * u->w + 2 * j] + x[(2 * i) * u->w + 2 * j + 1]
                        + x[(2 * i + 1) * u->w + 2 * j] + x[(2 * i + 1) * u->w + 2 * j + 1]) / 4;
          l += u->wy.d[((gsize) p * oh + i) * ow + j] * avg;
        }
  return l;
}

static void
test_avgpool (void)
{
  /* Even and odd sizes (an odd last row/column is dropped, as torch). */
  for (int k = 0; k < 2; k++)
    {
      g_autoptr (GRand) r = g_rand_new_with_seed (73 + k);
      Up u = { .n = 2, .c = 3, .h = k ? 5 : 4, .w = k ? 7 : 6 };
      gsize nx = (gsize) u.n * u.c * u.h * u.w, ny = (gsize) u.n * u.c * (u.h / 2) * (u.w / 2);
      t_rand (&u.x, nx, r, -1, 1);
      t_rand (&u.wy, ny, r, -1, 1);
      float *y = g_new (float, ny);
      double *yref = g_new (double, ny);
      ddim_avgpool2x_forward (u.x.f, u.n, u.c, u.h, u.w, y);
      for (int p = 0; p < u.n * u.c; p++)
        for (int i = 0; i < u.h / 2; i++)
          for (int j = 0; j < u.w / 2; j++)
            {
              const double *x = u.x.d + (gsize) p * u.h * u.w;
              yref[((gsize) p * (u.h / 2) + i) * (u.w / 2) + j]
                  = (x[(2 * i) * u.w + 2 * j] + x[(2 * i) * u.w + 2 * j + 1]
                     + x[(2 * i + 1) * u.w + 2 * j] + x[(2 * i + 1) * u.w + 2 * j + 1]) / 4;
            }
      check_forward ("avgpool", y, yref, ny);
      g_free (y);
      g_free (yref);
      float *dx = filled (nx, GARBAGE);
      ddim_avgpool2x_backward (u.wy.f, u.n, u.c, u.h, u.w, dx);
      check_grad ("avgpool", "dx", pool_loss, &u, &u.x, dx, 0.f);
      g_free (dx);
      t_free (&u.x);
      t_free (&u.wy);
    }
}

/* ---- timestep embedding ---------------------------------------------------- */

typedef struct {
  int      n, dim;
  gboolean flip;
  float    shift;
  T        t, wy;
} Temb;

static double
temb_loss (gconstpointer ctx)
{
  const Temb *e = ctx;
  int half = e->dim / 2;
  double l = 0;
  for (int b = 0; b < e->n; b++)
    for (int i = 0; i < half; i++)
      {
        /* The frequencies exactly as the forward computes them. */
        float exponent = (float) i * (float) (-log (10000.0));
        exponent = exponent / ((float) half - e->shift);
        double arg = e->t.d[b] * (double) expf (exponent);
        const double *w = e->wy.d + (gsize) b * e->dim;
        l += w[e->flip ? half + i : i] * sin (arg) + w[e->flip ? i : half + i] * cos (arg);
      }
  return l;
}

static void
test_timestep_embedding (void)
{
  for (int t = 0; t < 2; t++)
    {
      g_autoptr (GRand) r = g_rand_new_with_seed (81 + t);
      Temb e = { .n = 3, .dim = t ? 9 : 8, .flip = t == 1, .shift = t ? 0.f : 1.f };
      t_rand (&e.t, e.n, r, 0, 20);
      t_rand (&e.wy, (gsize) e.n * e.dim, r, -1, 1);
      float *dt = filled (e.n, GARBAGE);
      ddim_timestep_embedding_backward (e.t.f, e.n, e.dim, e.flip, e.shift, e.wy.f, dt);
      check_grad ("timestep", "dt", temb_loss, &e, &e.t, dt, 0.f);
      g_free (dt);
      t_free (&e.t);
      t_free (&e.wy);
    }
}


/* Batches of small images are convolved several images per GEMM; forward
 * and backward must equal the image-by-image results. */
static void
test_conv_grouped_batch (void)
{
  GRand *r = g_rand_new_with_seed (77);
  const int n = 5, cin = 3, cout = 4, h = 6, w = 5;
  struct { int stride, tl, br; } cases[] = { { 1, 1, 1 }, { 2, 0, 1 }, { 2, 1, 1 } };
  for (guint ci = 0; ci < G_N_ELEMENTS (cases); ci++)
    {
      int st = cases[ci].stride, tl = cases[ci].tl, br = cases[ci].br;
      int oh = ddim_conv2d_out_size (h, 3, st, tl, br), ow = ddim_conv2d_out_size (w, 3, st, tl, br);
      gsize nx = (gsize) n * cin * h * w, ny = (gsize) n * cout * oh * ow;
      gsize px = (gsize) cin * h * w, py = (gsize) cout * oh * ow;
      g_autofree float *x = g_new (float, nx), *wt = g_new (float, cout * cin * 9);
      g_autofree float *bias = g_new (float, cout), *dy = g_new (float, ny);
      for (gsize i = 0; i < nx; i++) x[i] = (float) g_rand_double_range (r, -1, 1);
      for (int i = 0; i < cout * cin * 9; i++) wt[i] = (float) g_rand_double_range (r, -1, 1);
      for (int i = 0; i < cout; i++) bias[i] = (float) g_rand_double_range (r, -1, 1);
      for (gsize i = 0; i < ny; i++) dy[i] = (float) g_rand_double_range (r, -1, 1);
      DdimArena arena;
      ddim_arena_init (&arena);
      g_autofree float *yb = g_new (float, ny), *y1 = g_new (float, ny);
      g_autofree float *dxb = g_new (float, nx), *dx1 = g_new (float, nx);
      g_autofree float *dwb = g_new0 (float, cout * cin * 9), *dw1 = g_new0 (float, cout * cin * 9);
      ddim_conv2d_forward (x, n, cin, h, w, wt, bias, cout, 3, st, tl, br, yb, &arena);
      ddim_conv2d_backward (x, n, cin, h, w, wt, cout, 3, st, tl, br, dy, dxb, dwb, NULL, &arena);
      for (int b = 0; b < n; b++)
        {
          ddim_conv2d_forward (x + b * px, 1, cin, h, w, wt, bias, cout, 3, st, tl, br,
                               y1 + b * py, &arena);
          ddim_conv2d_backward (x + b * px, 1, cin, h, w, wt, cout, 3, st, tl, br, dy + b * py,
                                dx1 + b * px, dw1, NULL, &arena);
        }
      for (gsize i = 0; i < ny; i++)
        g_assert_cmpfloat (fabsf (yb[i] - y1[i]), <=, 1e-5f);
      for (gsize i = 0; i < nx; i++)
        g_assert_cmpfloat (fabsf (dxb[i] - dx1[i]), <=, 1e-5f);
      for (int i = 0; i < cout * cin * 9; i++)
        g_assert_cmpfloat (fabsf (dwb[i] - dw1[i]), <=, 1e-4f);
      ddim_arena_clear (&arena);
    }
  g_rand_free (r);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/ops-grad/conv/3x3-s1-p11", test_conv_3x3_s1);
  g_test_add_func ("/ops-grad/conv/3x3-s2-p01", test_conv_3x3_s2_p01);
  g_test_add_func ("/ops-grad/conv/3x3-s2-p11", test_conv_3x3_s2_p11);
  g_test_add_func ("/ops-grad/conv/1x1", test_conv_1x1);
  g_test_add_func ("/ops-grad/conv/bands", test_conv_bands);
  g_test_add_func ("/ops-grad/conv/grouped-batch", test_conv_grouped_batch);
  g_test_add_func ("/ops-grad/group-norm/plain", test_group_norm);
  g_test_add_func ("/ops-grad/group-norm/silu", test_group_norm_silu);
  g_test_add_func ("/ops-grad/silu", test_silu);
  g_test_add_func ("/ops-grad/linear", test_linear);
  g_test_add_func ("/ops-grad/attention/1head-gn", test_attention_1head_gn);
  g_test_add_func ("/ops-grad/attention/2heads-gn", test_attention_2heads_gn);
  g_test_add_func ("/ops-grad/attention/1head", test_attention_1head);
  g_test_add_func ("/ops-grad/attention/2heads", test_attention_2heads);
  g_test_add_func ("/ops-grad/upsample", test_upsample);
  g_test_add_func ("/ops-grad/avgpool", test_avgpool);
  g_test_add_func ("/ops-grad/timestep-embedding", test_timestep_embedding);
  int ret = g_test_run ();
  for (int i = 0; i < n_reports; i++)
    g_test_message ("summary: %-10s max rel err over x and parameter grads %.3g",
                    reports[i].op, reports[i].max_err);
  return ret;
}
