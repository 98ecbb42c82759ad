/* Semantic editing, directions, discovery and interpolation: the paired
 * forward, op and UNet JVPs, exactness at strength 0, continuity,
 * interpolation, orthonormal components, fitting, the directions file and
 * the errors users meet. */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "ddim/ddim.h"
#include "ops/ops.h"

#define STEPS 10

static DdimModel *
load_fixture (const char *name)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  if (root == NULL)
    return NULL;
  g_autofree char *dir = g_build_filename (root, "diffusers", name, NULL);
  g_autoptr (GError) error = NULL;
  DdimModel *m = ddim_model_load (dir, &error);
  g_assert_no_error (error);
  return m;
}

#define REQUIRE_FIXTURE(var, name)                              \
  g_autoptr (DdimModel) var = load_fixture (name);              \
  if (var == NULL)                                              \
    {                                                           \
      g_test_skip ("DDIM_FIXTURES_DIR not set");                \
      return;                                                   \
    }

static double
dotd (const float *a, const float *b, gsize n)
{
  double s = 0;
  for (gsize i = 0; i < n; i++)
    s += (double) a[i] * b[i];
  return s;
}

static double
dist (const float *a, const float *b, gsize n)
{
  double s = 0;
  for (gsize i = 0; i < n; i++)
    s += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
  return sqrt (s);
}

static double
max_abs_diff (const float *a, const float *b, gsize n)
{
  double m = 0;
  for (gsize i = 0; i < n; i++)
    m = MAX (m, fabs ((double) a[i] - b[i]));
  return m;
}

static double
max_abs (const float *a, gsize n)
{
  double m = 0;
  for (gsize i = 0; i < n; i++)
    m = MAX (m, fabs ((double) a[i]));
  return m;
}

static void
rand_fill (GRand *r, float *x, gsize n, double lo, double hi)
{
  for (gsize i = 0; i < n; i++)
    x[i] = (float) g_rand_double_range (r, lo, hi);
}

static gsize
image_size (DdimModel *m)
{
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  return (gsize) c->in_channels * c->sample_size * c->sample_size;
}

static gsize
hspace_size (DdimModel *m, int *hc, int *hh, int *hw)
{
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  ddim_unet_hspace_shape (m->unet, c->sample_size, c->sample_size, hc, hh, hw);
  return (gsize) *hc * *hh * *hw;
}

static DdimRunOptions
run_options (DdimModel *m)
{
  DdimRunOptions o;
  ddim_run_options_init (&o, m->schedule);
  o.steps = STEPS;
  return o;
}

/* A random unit h-space direction for @m at its sample size. */
static DdimDirection *
random_h_direction (DdimModel *m, const char *name, guint32 seed)
{
  int hc, hh, hw;
  gsize n = hspace_size (m, &hc, &hh, &hw);
  DdimDirection *d = ddim_direction_new (name, DDIM_SPACE_H, 3, hc, hh, hw);
  ddim_randn (seed, d->data, n);
  double nrm = sqrt (dotd (d->data, d->data, n));
  for (gsize i = 0; i < n; i++)
    d->data[i] = (float) (d->data[i] / nrm);
  return d;
}

/* ---- ops: JVPs against VJPs (adjoint identity) and finite differences -- */

static void
test_op_jvps (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (11);
  DdimArena arena;
  ddim_arena_init (&arena);
  int n = 2, c = 16, hw = 12, groups = 4;
  gsize cnt = (gsize) n * c * hw;
  float *x = g_new (float, cnt), *dx = g_new (float, cnt), *dy = g_new (float, cnt);
  float *w = g_new (float, cnt), *gx = g_new (float, cnt);
  float *gamma = g_new (float, c), *beta = g_new (float, c);
  rand_fill (r, x, cnt, -2, 2);
  rand_fill (r, dx, cnt, -1, 1);
  rand_fill (r, w, cnt, -1, 1);
  rand_fill (r, gamma, c, 0.5, 1.5);
  rand_fill (r, beta, c, -0.5, 0.5);

  /* Group norm with and without SiLU: <J dx, w> == <dx, J^T w>, and J dx
   * against central differences. */
  for (int silu = 0; silu < 2; silu++)
    {
      ddim_group_norm_jvp (x, dx, n, c, hw, groups, 1e-5f, gamma, beta, silu, dy);
      ddim_group_norm_backward (x, n, c, hw, groups, 1e-5f, gamma, beta, silu, w, gx, NULL, NULL);
      double lhs = dotd (dy, w, cnt), rhs = dotd (dx, gx, cnt);
      g_assert_cmpfloat (fabs (lhs - rhs), <, 1e-4 * (fabs (lhs) + 1));
      float *xp = g_new (float, cnt), *xm = g_new (float, cnt);
      float *yp = g_new (float, cnt), *ym = g_new (float, cnt);
      double eps = 1e-2;
      for (gsize i = 0; i < cnt; i++)
        {
          xp[i] = (float) (x[i] + eps * dx[i]);
          xm[i] = (float) (x[i] - eps * dx[i]);
        }
      ddim_group_norm_forward (xp, n, c, hw, groups, 1e-5f, gamma, beta, silu, yp);
      ddim_group_norm_forward (xm, n, c, hw, groups, 1e-5f, gamma, beta, silu, ym);
      double err = 0;
      for (gsize i = 0; i < cnt; i++)
        err = MAX (err, fabs ((yp[i] - ym[i]) / (2 * eps) - dy[i]));
      g_assert_cmpfloat (err, <, 2e-3 * max_abs (dy, cnt));
      g_free (xp);
      g_free (xm);
      g_free (yp);
      g_free (ym);
    }

  /* Attention (two heads, with group norm): adjoint identity. */
  float *qw = g_new (float, c * c), *kw = g_new (float, c * c), *vw = g_new (float, c * c);
  float *ow = g_new (float, c * c), *qb = g_new (float, c), *kb = g_new (float, c);
  float *vb = g_new (float, c), *ob = g_new (float, c);
  rand_fill (r, qw, c * c, -0.3, 0.3);
  rand_fill (r, kw, c * c, -0.3, 0.3);
  rand_fill (r, vw, c * c, -0.3, 0.3);
  rand_fill (r, ow, c * c, -0.3, 0.3);
  rand_fill (r, qb, c, -0.1, 0.1);
  rand_fill (r, kb, c, -0.1, 0.1);
  rand_fill (r, vb, c, -0.1, 0.1);
  rand_fill (r, ob, c, -0.1, 0.1);
  DdimAttentionParams p = { gamma, beta, groups, 1e-5f, qw, qb, kw, kb, vw, vb, ow, ob, 2, 1.3f };
  ddim_attention_jvp (x, dx, n, c, hw, &p, dy, &arena);
  ddim_attention_backward (x, n, c, hw, &p, w, gx, NULL, &arena);
  double lhs = dotd (dy, w, cnt), rhs = dotd (dx, gx, cnt);
  g_assert_cmpfloat (fabs (lhs - rhs), <, 1e-4 * (fabs (lhs) + 1));
  /* In place (dy == dx) gives the same. */
  float *inplace = g_memdup2 (dx, cnt * sizeof (float));
  ddim_attention_jvp (x, inplace, n, c, hw, &p, inplace, &arena);
  g_assert_cmpfloat (max_abs_diff (inplace, dy, cnt), <, 1e-6);
  g_free (inplace);

  /* Convolution and linear layers: the op without bias. */
  float *cw = g_new (float, 8 * c * 9), *cb = g_new0 (float, 8);
  rand_fill (r, cw, 8 * c * 9, -0.2, 0.2);
  float *y1 = g_new (float, (gsize) n * 8 * 3 * 4), *y2 = g_new (float, (gsize) n * 8 * 3 * 4);
  ddim_conv2d_jvp (dx, n, c, 3, 4, cw, 8, 3, 1, 1, 1, y1, &arena);
  ddim_conv2d_forward (dx, n, c, 3, 4, cw, cb, 8, 3, 1, 1, 1, y2, &arena);
  g_assert_cmpmem (y1, n * 8 * 12 * sizeof (float), y2, n * 8 * 12 * sizeof (float));
  ddim_linear_jvp (dx, n, c, qw, c, y1);
  ddim_linear_forward (dx, n, c, qw, NULL, c, y2);
  g_assert_cmpfloat (max_abs_diff (y1, y2, (gsize) n * c), <, 1e-6);

  g_free (cw);
  g_free (cb);
  g_free (y1);
  g_free (y2);
  g_free (qw);
  g_free (kw);
  g_free (vw);
  g_free (ow);
  g_free (qb);
  g_free (kb);
  g_free (vb);
  g_free (ob);
  g_free (x);
  g_free (dx);
  g_free (dy);
  g_free (w);
  g_free (gx);
  g_free (gamma);
  g_free (beta);
  ddim_arena_clear (&arena);
}

/* ---- the paired forward ----------------------------------------------- */

static void
test_forward_pair (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  int S = c->sample_size, n = 2, hc, hh, hw;
  gsize xs = image_size (m), hs = hspace_size (m, &hc, &hh, &hw);
  g_autofree float *x = g_new (float, n * xs), *dh = g_new (float, n * hs);
  g_autofree float *ref = g_new (float, n * xs), *plain = g_new (float, n * xs);
  g_autofree float *shifted = g_new (float, n * xs), *ref_shift = g_new (float, n * xs);
  g_autofree float *h = g_new (float, n * hs), *h_ref = g_new (float, n * hs);
  float t[2] = { 700, 120 };
  ddim_randn (1, x, n * xs);
  ddim_randn (2, dh, n * hs);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_forward (m->unet, x, n, S, S, t, ref, &error));
  /* Twice: the first call grows the arena (overflow chunks), the second
   * runs in the grown block. Both must match the plain forward exactly. */
  for (int rep = 0; rep < 2; rep++)
    {
      g_assert_true (ddim_unet_forward_pair (m->unet, x, n, S, S, t, dh, h, plain, shifted,
                                             &error));
      g_assert_no_error (error);
      g_assert_cmpmem (plain, n * xs * sizeof (float), ref, n * xs * sizeof (float));
    }
  /* The shifted output is the forward with h + dh (tape path), and h is
   * reported before the delta by both. */
  g_assert_true (ddim_unet_forward_hspace (m->unet, x, n, S, S, t, dh, h_ref, ref_shift, &error));
  g_assert_cmpfloat (max_abs_diff (shifted, ref_shift, n * xs), <=, 1e-5 * max_abs (ref_shift, n * xs));
  g_assert_cmpfloat (max_abs_diff (h, h_ref, n * hs), <=, 1e-6 * max_abs (h_ref, n * hs));
  g_assert_cmpfloat (max_abs_diff (shifted, ref, n * xs), >, 0);
  /* Without a delta the shifted output is a copy. */
  g_assert_true (ddim_unet_forward_pair (m->unet, x, n, S, S, t, NULL, NULL, plain, shifted,
                                         &error));
  g_assert_cmpmem (shifted, n * xs * sizeof (float), ref, n * xs * sizeof (float));
  /* A bad size is an error, not a crash. */
  g_assert_false (ddim_unet_forward_pair (m->unet, x, 1, S + 1, S, t, dh, NULL, plain, shifted,
                                          &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
}

/* ---- the UNet's h-space JVP ------------------------------------------- */

static void
check_jvp (DdimUNet *unet, int S, float tval, guint64 seed)
{
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  int hc, hh, hw, n = 2;
  ddim_unet_hspace_shape (unet, S, S, &hc, &hh, &hw);
  gsize xs = (gsize) c->in_channels * S * S, hs = (gsize) hc * hh * hw;
  g_autofree float *x = g_new (float, n * xs), *v = g_new (float, n * xs);
  g_autofree float *jv = g_new (float, n * hs), *u = g_new (float, n * hs);
  g_autofree float *jtu = g_new (float, n * xs), *h0 = g_new (float, n * hs);
  g_autofree float *xp = g_new (float, n * xs), *xm = g_new (float, n * xs);
  g_autofree float *hp = g_new (float, n * hs), *hm = g_new (float, n * hs);
  g_autofree float *outp = g_new (float, n * xs);
  float t[2] = { tval, tval * 0.5f };
  ddim_randn (seed, x, n * xs);
  ddim_randn (seed + 1, v, n * xs);
  ddim_randn (seed + 2, u, n * hs);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_hspace_jvp (unet, x, n, S, S, t, v, h0, jv, &error));
  g_assert_no_error (error);

  /* Central differences of h, in float: a step of 1e-2 keeps both the
   * truncation and the round-off error near 1e-4 relative. */
  double eps = 1e-2;
  for (gsize i = 0; i < n * xs; i++)
    {
      xp[i] = (float) (x[i] + eps * v[i]);
      xm[i] = (float) (x[i] - eps * v[i]);
    }
  g_assert_true (ddim_unet_forward_pair (unet, xp, n, S, S, t, NULL, hp, outp, NULL, &error));
  g_assert_true (ddim_unet_forward_pair (unet, xm, n, S, S, t, NULL, hm, outp, NULL, &error));
  double err = 0;
  for (gsize i = 0; i < n * hs; i++)
    err = MAX (err, fabs ((hp[i] - hm[i]) / (2 * eps) - jv[i]));
  g_test_message ("J v vs central differences: max error %.3g of max %.3g", err,
                  max_abs (jv, n * hs));
  g_assert_cmpfloat (err, <, 5e-3 * max_abs (jv, n * hs));

  /* Adjoint consistency: <J v, u> == <v, J^T u>. */
  g_assert_true (ddim_unet_hspace_vjp (unet, x, n, S, S, t, u, NULL, jtu, &error));
  double lhs = dotd (jv, u, n * hs), rhs = dotd (v, jtu, n * xs);
  g_test_message ("<Jv,u> = %.8g, <v,J^T u> = %.8g", lhs, rhs);
  g_assert_cmpfloat (fabs (lhs - rhs), <, 1e-4 * sqrt (dotd (jv, jv, n * hs) * dotd (u, u, n * hs)));
}

static void
test_hspace_jvp (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  check_jvp (m->unet, ddim_unet_get_config (m->unet)->sample_size, 600, 10);
  g_autoptr (DdimModel) v = load_fixture ("tiny-variant");
  check_jvp (v->unet, ddim_unet_get_config (v->unet)->sample_size, 300, 20);
}

static void
test_hspace_jvp_variants (void)
{
  /* The branches the fixtures do not reach: scale_shift time conditioning,
   * centred input, a mid-block output scale, a resnet shortcut in the
   * encoder. Random weights. */
  static const char *json =
      "{\"sample_size\": 8, \"in_channels\": 2, \"out_channels\": 2,"
      " \"center_input_sample\": true, \"resnet_time_scale_shift\": \"scale_shift\","
      " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],"
      " \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],"
      " \"block_out_channels\": [16, 32], \"layers_per_block\": 1,"
      " \"mid_block_scale_factor\": 1.414, \"attention_head_dim\": 8,"
      " \"norm_num_groups\": 4}";
  DdimUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_config_parse (json, -1, &c, &error));
  g_assert_no_error (error);
  g_autoptr (DdimUNet) u = ddim_unet_new_random (&c, 5);
  check_jvp (u, 8, 400, 30);
}

/* ---- editing ------------------------------------------------------------ */

static void
test_strength_zero_exact (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  gsize xs = image_size (m);
  DdimRunOptions o = run_options (m);
  g_autofree float *ref = g_new (float, xs), *x = g_new (float, xs);
  ddim_randn (42, ref, xs);
  memcpy (x, ref, xs * sizeof (float));
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_sample (m->unet, m->schedule, ref, 1, S, S, &o, &error));

  g_autoptr (DdimDirection) dh = random_h_direction (m, "r", 3);
  g_autoptr (DdimDirection) dx = ddim_direction_new ("x", DDIM_SPACE_X, 3, 3, S, S);
  ddim_randn (4, dx->data, xs);
  const DdimDirection *dirs[2] = { dh, dx };
  for (int k = 0; k < 2; k++)
    for (int t_edit = 0; t_edit < 1000; t_edit += 450)
      {
        g_autofree float *y = g_memdup2 (x, xs * sizeof (float));
        g_assert_true (ddim_edit (m->unet, m->schedule, y, 1, S, S, dirs[k], 0.0, t_edit, &o,
                                  &error));
        g_assert_no_error (error);
        g_assert_cmpmem (y, xs * sizeof (float), ref, xs * sizeof (float));
      }
}

/* Continuity needs many edits; fewer steps keep it quick. */
#define CONTINUITY_STEPS 6

static double
edit_distance (DdimModel *m, const float *x, const float *ref, const DdimDirection *d,
               double strength, int t_edit)
{
  int S = ddim_unet_get_config (m->unet)->sample_size;
  gsize xs = image_size (m);
  DdimRunOptions o = run_options (m);
  o.steps = CONTINUITY_STEPS;
  g_autofree float *y = g_memdup2 (x, xs * sizeof (float));
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_edit (m->unet, m->schedule, y, 1, S, S, d, strength, t_edit, &o, &error));
  g_assert_no_error (error);
  return dist (y, ref, xs);
}

static void
check_continuity (DdimModel *m, const DdimDirection *d, double scale, int t_edit)
{
  int S = ddim_unet_get_config (m->unet)->sample_size;
  gsize xs = image_size (m);
  DdimRunOptions o = run_options (m);
  o.steps = CONTINUITY_STEPS;
  g_autofree float *x = g_new (float, xs), *ref = g_new (float, xs);
  ddim_randn (7, x, xs);
  memcpy (ref, x, xs * sizeof (float));
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_sample (m->unet, m->schedule, ref, 1, S, S, &o, &error));

  static const double f[] = { 0.001, 0.01, 0.1, 0.4, 1.0 };
  double dpos[G_N_ELEMENTS (f)], dneg[G_N_ELEMENTS (f)];
  for (gsize i = 0; i < G_N_ELEMENTS (f); i++)
    {
      dpos[i] = edit_distance (m, x, ref, d, f[i] * scale, t_edit);
      /* Negative strengths: the ends are enough. */
      dneg[i] = (i == 0 || i == G_N_ELEMENTS (f) - 1)
                    ? edit_distance (m, x, ref, d, -f[i] * scale, t_edit) : -1;
      g_test_message ("%s strength +-%.4g: distance %.5g / %.5g", d->name, f[i] * scale,
                      dpos[i], dneg[i]);
    }
  gsize last = G_N_ELEMENTS (f) - 1;
  g_assert_cmpfloat (dpos[last], >, 0);
  /* Continuity: a tiny strength moves the result about proportionally
   * little; distance grows with strength. */
  g_assert_cmpfloat (dpos[0], <, 0.01 * dpos[last]);
  g_assert_cmpfloat (dneg[0], <, 0.01 * dneg[last]);
  for (gsize i = 1; i <= last; i++)
    g_assert_cmpfloat (dpos[i], >=, 0.95 * dpos[i - 1]);
  /* Near 0 the edit is linear: 10x the strength, about 10x the change. */
  g_assert_cmpfloat (dpos[1] / dpos[0], >, 5);
  g_assert_cmpfloat (dpos[1] / dpos[0], <, 20);
}

static void
test_edit_continuity (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  int hc, hh, hw;
  gsize xs = image_size (m), hs = hspace_size (m, &hc, &hh, &hw);
  /* Strengths on the scale of h itself. */
  g_autofree float *x = g_new (float, xs), *h = g_new (float, hs), *out = g_new (float, xs);
  ddim_randn (7, x, xs);
  float t = 999;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_forward_pair (m->unet, x, 1, S, S, &t, NULL, h, out, NULL, &error));
  double hnorm = sqrt (dotd (h, h, hs));
  g_autoptr (DdimDirection) dh = random_h_direction (m, "random-h", 9);
  check_continuity (m, dh, 0.5 * hnorm, 500);

  /* Pooled direction, broadcast over positions. */
  g_autoptr (DdimDirection) pooled = ddim_direction_new ("pooled", DDIM_SPACE_H, 1, hc, 0, 0);
  ddim_randn (10, pooled->data, hc);
  double pn = sqrt (dotd (pooled->data, pooled->data, hc));
  for (int i = 0; i < hc; i++)
    pooled->data[i] = (float) (pooled->data[i] / pn);
  check_continuity (m, pooled, 0.5 * hnorm / sqrt (hh * hw), 500);

  /* x-space. */
  g_autoptr (DdimDirection) dx = ddim_direction_new ("random-x", DDIM_SPACE_X, 3, 3, S, S);
  ddim_randn (11, dx->data, xs);
  double xn = sqrt (dotd (dx->data, dx->data, xs));
  for (gsize i = 0; i < xs; i++)
    dx->data[i] = (float) (dx->data[i] / xn);
  check_continuity (m, dx, 0.5 * sqrt ((double) xs), 500);
}

/* ---- edits of exact (BDIA) latents -------------------------------------- */

typedef struct {
  int calls, last_done, last_total;
} ProgressCount;

static void
count_progress (int done, int total, gpointer data)
{
  ProgressCount *p = data;
  p->calls++;
  p->last_done = done;
  p->last_total = total;
}

/* A random image in [-1, 1] of @m's sample size, inverted with @method at
 * STEPS steps. */
static DdimLatent *
invert_random (DdimModel *m, DdimInversionMethod method, float *x0)
{
  int S = ddim_unet_get_config (m->unet)->sample_size;
  gsize xs = image_size (m);
  ddim_randn (21, x0, xs);
  for (gsize i = 0; i < xs; i++)
    x0[i] = CLAMP (0.5f * x0[i], -1.f, 1.f);
  DdimRunOptions o = run_options (m);
  g_autoptr (GError) error = NULL;
  DdimLatent *l = ddim_invert_with_method (m->unet, m->schedule, x0, S, S, method, NULL, &o,
                                           NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (l);
  return l;
}

/* Strength 0 in BDIA's decoder is ddim_decode_bdia bit for bit, so the
 * source comes back to round-off, for h- and x-space directions alike. */
static void
test_bdia_strength_zero (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  gsize xs = image_size (m);
  g_autofree float *x0 = g_new (float, xs), *dec = g_new (float, xs);
  g_autoptr (DdimLatent) l = invert_random (m, DDIM_METHOD_BDIA, x0);
  DdimRunOptions o = run_options (m);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_decode_bdia (m->unet, m->schedule, l->latent, l->latent_pair, dec, S, S,
                                   l->bdia_gamma, &o, NULL, &error));
  g_assert_cmpfloat (max_abs_diff (dec, x0, xs), <, 1e-4);

  g_autoptr (DdimDirection) dh = random_h_direction (m, "r", 3);
  g_autoptr (DdimDirection) dx = ddim_direction_new ("x", DDIM_SPACE_X, 3, 3, S, S);
  ddim_randn (4, dx->data, xs);
  const DdimDirection *dirs[2] = { dh, dx };
  for (int k = 0; k < 2; k++)
    {
      g_autofree float *y = g_memdup2 (l->latent, xs * sizeof (float));
      DdimEditStats st = { 0 };
      g_assert_true (ddim_edit_bdia (m->unet, m->schedule, y, l->latent_pair, 1, S, S,
                                     l->bdia_gamma, dirs[k], 0.0, 300, &o, &st, &error));
      g_assert_no_error (error);
      g_assert_cmpmem (y, xs * sizeof (float), dec, xs * sizeof (float));
      g_assert_cmpint (st.model_evals, ==, STEPS - 1);
      g_assert_cmpint (st.shifted_decoders, ==, 0);
      /* Through the latent: the same. */
      g_autofree float *z = g_new (float, xs);
      g_assert_true (ddim_edit_latent (m->unet, m->schedule, l, DDIM_EDIT_DECODER_OWN, dirs[k], 0.0, -1, NULL, z, NULL,
                                       &error));
      g_assert_cmpfloat (max_abs_diff (z, x0, xs), <, 1e-4);
    }
  g_assert_true (ddim_edit_latent_is_exact (l));
}

/* An edit of an exact latent costs one decoding and no reconstruction: the
 * model calls are counted where they are made. A DDIM latent also pays the
 * plain reconstruction. The change is the edit minus the source, resp. the
 * reconstruction. */
static void
test_edit_change_evaluations (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  gsize xs = image_size (m);
  g_autofree float *x0 = g_new (float, xs), *change = g_new (float, xs);
  g_autofree float *edited = g_new (float, xs);
  g_autoptr (DdimDirection) d = random_h_direction (m, "r", 5);
  int t_edit = 400;
  g_autofree int *ts = ddim_schedule_timesteps (m->schedule, STEPS, m->schedule->spacing, NULL);
  int shifted_ddim = 0;
  for (int i = 0; i < STEPS; i++)
    shifted_ddim += ts[i] >= t_edit;
  g_assert_cmpint (shifted_ddim, >, 1);
  g_assert_cmpint (shifted_ddim, <, STEPS);
  g_autoptr (GError) error = NULL;
  double strength = 30;

  /* BDIA: exact, so one decoding; its first step has no model call. */
  g_autoptr (DdimLatent) bdia = invert_random (m, DDIM_METHOD_BDIA, x0);
  ProgressCount pc = { 0 };
  DdimRunOptions o;
  ddim_run_options_init (&o, m->schedule);
  o.progress = count_progress;
  o.progress_data = &pc;
  DdimEditStats st = { 0 };
  g_assert_true (ddim_edit_change (m->unet, m->schedule, bdia, DDIM_EDIT_DECODER_OWN, TRUE, x0, d, strength, t_edit, &o,
                                   change, &st, &error));
  g_assert_no_error (error);
  g_assert_cmpint (st.model_evals, ==, STEPS - 1);
  g_assert_cmpint (st.shifted_decoders, ==, shifted_ddim - 1);
  g_assert_cmpint (pc.calls, ==, STEPS - 1);
  g_assert_cmpint (pc.last_done, ==, pc.last_total);
  DdimEditStats st2 = { 0 };
  g_assert_true (ddim_edit_latent (m->unet, m->schedule, bdia, DDIM_EDIT_DECODER_OWN, d, strength, t_edit, NULL, edited,
                                   &st2, &error));
  g_assert_cmpint (st2.model_evals, ==, STEPS - 1);
  for (gsize i = 0; i < xs; i++)
    edited[i] -= x0[i];
  g_assert_cmpmem (change, xs * sizeof (float), edited, xs * sizeof (float));
  g_assert_cmpfloat (max_abs (change, xs), >, 1e-3);

  /* The same latent in DDIM's decoder (its first state): with a
   * reconstruction pass. */
  st = (DdimEditStats) { 0 };
  g_assert_true (ddim_edit_change (m->unet, m->schedule, bdia, DDIM_EDIT_DECODER_DDIM, TRUE, NULL, d,
                                   strength, t_edit, NULL, change, &st, &error));
  g_assert_no_error (error);
  g_assert_cmpint (st.model_evals, ==, 2 * STEPS);
  g_assert_cmpint (st.shifted_decoders, ==, shifted_ddim);

  /* Strength 0: nothing to decode. */
  st = (DdimEditStats) { 0 };
  g_assert_true (ddim_edit_change (m->unet, m->schedule, bdia, DDIM_EDIT_DECODER_OWN, TRUE, x0, d, 0.0, t_edit, NULL, change,
                                   &st, &error));
  g_assert_cmpint (st.model_evals, ==, 0);
  g_assert_cmpfloat (max_abs (change, xs), ==, 0);

  /* DDIM: reconstruction and edit, each STEPS model calls. */
  g_autoptr (DdimLatent) ddim = invert_random (m, DDIM_METHOD_DDIM, x0);
  g_assert_false (ddim_edit_latent_is_exact (ddim));
  pc = (ProgressCount) { 0 };
  st = (DdimEditStats) { 0 };
  g_assert_true (ddim_edit_change (m->unet, m->schedule, ddim, DDIM_EDIT_DECODER_OWN, TRUE, NULL, d, strength, t_edit, &o,
                                   change, &st, &error));
  g_assert_no_error (error);
  g_assert_cmpint (st.model_evals, ==, 2 * STEPS);
  g_assert_cmpint (st.shifted_decoders, ==, shifted_ddim);
  g_assert_cmpint (pc.calls, ==, 2 * STEPS);
  g_assert_cmpint (pc.last_done, ==, 2 * STEPS);
  DdimRunOptions ro = run_options (m);
  g_autofree float *rec = g_memdup2 (ddim->latent, xs * sizeof (float));
  g_assert_true (ddim_sample (m->unet, m->schedule, rec, 1, S, S, &ro, &error));
  memcpy (edited, ddim->latent, xs * sizeof (float));
  g_assert_true (ddim_edit (m->unet, m->schedule, edited, 1, S, S, d, strength, t_edit, &ro,
                            &error));
  for (gsize i = 0; i < xs; i++)
    edited[i] -= rec[i];
  g_assert_cmpmem (change, xs * sizeof (float), edited, xs * sizeof (float));

  /* Without the reconstruction pass: the edit minus the source, one
   * decoding. */
  st = (DdimEditStats) { 0 };
  g_assert_true (ddim_edit_change (m->unet, m->schedule, ddim, DDIM_EDIT_DECODER_OWN, FALSE, x0,
                                   d, strength, t_edit, NULL, change, &st, &error));
  g_assert_cmpint (st.model_evals, ==, STEPS);
  for (gsize i = 0; i < xs; i++)
    edited[i] += rec[i] - x0[i];
  g_assert_cmpfloat (max_abs_diff (change, edited, xs), <, 1e-5);
}

/* The h-space edit in BDIA's decoder: continuous in the strength (a tiny
 * strength, a proportionally tiny change), and the same for every sample
 * of a batch as for that sample alone (to round-off). */
static void
test_bdia_edit (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  gsize xs = image_size (m);
  g_autofree float *x0 = g_new (float, xs);
  g_autoptr (DdimLatent) l = invert_random (m, DDIM_METHOD_BDIA, x0);
  g_autoptr (DdimDirection) d = random_h_direction (m, "r", 6);
  DdimRunOptions o = run_options (m);
  g_autoptr (GError) error = NULL;
  static const double f[] = { 0.01, 0.1, 10 };
  double dist_f[G_N_ELEMENTS (f)];
  g_autofree float *y = g_new (float, xs);
  for (gsize k = 0; k < G_N_ELEMENTS (f); k++)
    {
      g_assert_true (ddim_edit_latent (m->unet, m->schedule, l, DDIM_EDIT_DECODER_OWN, d, f[k], 300, &o, y, NULL,
                                       &error));
      g_assert_no_error (error);
      dist_f[k] = dist (y, x0, xs);
      g_test_message ("strength %g: distance %g", f[k], dist_f[k]);
    }
  g_assert_cmpfloat (dist_f[2], >, 1e-2);
  g_assert_cmpfloat (dist_f[1] / dist_f[0], >, 5);
  g_assert_cmpfloat (dist_f[1] / dist_f[0], <, 20);

  /* A batch of two: the latent and its negation. */
  g_autofree float *xb = g_new (float, 2 * xs), *pb = g_new (float, 2 * xs);
  for (gsize i = 0; i < xs; i++)
    {
      xb[i] = l->latent[i];
      xb[xs + i] = -l->latent[i];
      pb[i] = l->latent_pair[i];
      pb[xs + i] = -l->latent_pair[i];
    }
  g_assert_true (ddim_edit_bdia (m->unet, m->schedule, xb, pb, 2, S, S, l->bdia_gamma, d, 10,
                                 300, &o, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpfloat (max_abs_diff (xb, y, xs), <, 1e-3);
  g_autofree float *neg = g_new (float, xs);
  for (gsize i = 0; i < xs; i++)
    {
      neg[i] = -l->latent[i];
      pb[i] = -l->latent_pair[i];
    }
  g_assert_true (ddim_edit_bdia (m->unet, m->schedule, neg, pb, 1, S, S, l->bdia_gamma, d, 10,
                                 300, &o, NULL, &error));
  g_assert_cmpfloat (max_abs_diff (xb + xs, neg, xs), <, 1e-3);

  /* gamma outside (0, 1] is refused. */
  g_assert_false (ddim_edit_bdia (m->unet, m->schedule, neg, pb, 1, S, S, 0.0, d, 10, 300, &o,
                                  NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
}

static void
test_edit_defaults (void)
{
  DdimEditDefaults d;
  ddim_edit_defaults (&d);
  g_assert_cmpint (d.steps, >=, 1);
  g_assert_cmpstr (ddim_inversion_method_to_string (d.method), !=, "");
}

/* ---- interpolation ------------------------------------------------------ */

static void
check_interpolation (DdimModel *m, gboolean hspace, int N, int steps)
{
  int S = ddim_unet_get_config (m->unet)->sample_size;
  gsize xs = image_size (m);
  g_autofree float *a = g_new (float, xs), *b = g_new (float, xs);
  g_autofree float *ra = g_new (float, xs), *rb = g_new (float, xs);
  g_autofree float *frames = g_new (float, N * xs), *lat = g_new (float, N * xs);
  ddim_randn (100, a, xs);
  ddim_randn (200, b, xs);
  memcpy (ra, a, xs * sizeof (float));
  memcpy (rb, b, xs * sizeof (float));
  DdimRunOptions o = run_options (m);
  o.steps = steps;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_sample (m->unet, m->schedule, ra, 1, S, S, &o, &error));
  g_assert_true (ddim_sample (m->unet, m->schedule, rb, 1, S, S, &o, &error));

  DdimInterpolateOptions io;
  ddim_interpolate_options_init (&io, m->schedule);
  io.run.steps = steps;
  io.hspace = hspace;
  g_assert_true (ddim_interpolate (m->unet, m->schedule, a, b, S, S, N, &io, lat, frames,
                                   &error));
  g_assert_no_error (error);
  /* The ends are the plain reconstructions, bit for bit. */
  g_assert_cmpmem (frames, xs * sizeof (float), ra, xs * sizeof (float));
  g_assert_cmpmem (frames + (N - 1) * xs, xs * sizeof (float), rb, xs * sizeof (float));
  g_assert_cmpmem (lat, xs * sizeof (float), a, xs * sizeof (float));
  /* Monotone in between: distance to A rises, to B falls. */
  for (int i = 1; i < N; i++)
    {
      double da0 = dist (frames + (i - 1) * xs, ra, xs), da1 = dist (frames + i * xs, ra, xs);
      double db0 = dist (frames + (i - 1) * xs, rb, xs), db1 = dist (frames + i * xs, rb, xs);
      g_test_message ("frame %d: to A %.4g, to B %.4g", i, da1, db1);
      g_assert_cmpfloat (da1, >, da0);
      g_assert_cmpfloat (db1, <, db0);
    }
  /* Slerp keeps latents near the sphere: the middle latent's norm lies
   * between the ends' rather than dipping like a linear mix would. */
  double na = sqrt (dotd (a, a, xs)), nb = sqrt (dotd (b, b, xs));
  double nm = sqrt (dotd (lat + (N / 2) * xs, lat + (N / 2) * xs, xs));
  g_assert_cmpfloat (nm, >, 0.95 * MIN (na, nb));
}

static void
test_interpolation (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  check_interpolation (m, FALSE, 5, STEPS);
  check_interpolation (m, TRUE, 5, STEPS);
  g_autoptr (DdimModel) v = load_fixture ("tiny-variant");
  check_interpolation (v, FALSE, 4, 5);

  float a[4] = { 1, 0, 0, 0 }, b[4] = { 0, 1, 0, 0 }, out[4];
  ddim_slerp (a, b, 4, 0.5, out);
  g_assert_cmpfloat_with_epsilon (out[0], sqrt (0.5), 1e-6);
  g_assert_cmpfloat_with_epsilon (out[1], sqrt (0.5), 1e-6);
}

/* ---- unsupervised directions -------------------------------------------- */

static void
test_jacobian_directions (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  int hc, hh, hw;
  gsize xs = image_size (m), hs = hspace_size (m, &hc, &hh, &hw);
  int k = 3, t = 500;
  g_autofree float *x = g_new (float, xs), *v = g_new (float, k * xs), *u = g_new (float, k * hs);
  g_autofree float *jv = g_new (float, hs), *jtu = g_new (float, xs);
  double sigma[3];
  ddim_randn (5, x, xs);
  DdimDiscoverOptions o;
  ddim_discover_options_init (&o);
  o.k = k;
  o.iterations = 12;
  o.model_sha256 = m->weights_sha256;
  g_autoptr (GError) error = NULL;
  /* ddim_discover_jacobian wraps ddim_jacobian_svd: x-space directions
   * are the v_i, h-space ones the u_i, editable by "component-N". */
  g_autoptr (DdimDirectionSet) set = ddim_discover_jacobian (m->unet, x, S, S, t, &o, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_direction_set_get_n (set), ==, 2 * k);
  for (int i = 0; i < k; i++)
    {
      g_autofree char *nx = g_strdup_printf ("component-%d", i + 1);
      g_autofree char *nh = g_strdup_printf ("component-%d-h", i + 1);
      DdimDirection *dx = ddim_direction_set_lookup (set, nx, &error);
      DdimDirection *dh = ddim_direction_set_lookup (set, nh, &error);
      g_assert_no_error (error);
      g_assert_cmpint (dx->space, ==, DDIM_SPACE_X);
      g_assert_cmpint (dh->space, ==, DDIM_SPACE_H);
      g_assert_cmpint (dx->kind, ==, DDIM_DIRECTION_UNSUPERVISED);
      g_assert_cmpint (dx->t_min, ==, t);
      g_assert_cmpint (dh->channels, ==, hc);
      g_assert_cmpfloat (dx->sigma, ==, dh->sigma);
      memcpy (v + i * xs, dx->data, xs * sizeof (float));
      memcpy (u + i * hs, dh->data, hs * sizeof (float));
      sigma[i] = dx->sigma;
    }
  g_test_message ("sigma = %g %g %g", sigma[0], sigma[1], sigma[2]);

  /* Orthonormal right (and left) singular vectors, sigmas descending. */
  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++)
      {
        double want = i == j ? 1.0 : 0.0;
        g_assert_cmpfloat (fabs (dotd (v + i * xs, v + j * xs, xs) - want), <, 1e-4);
        g_assert_cmpfloat (fabs (dotd (u + i * hs, u + j * hs, hs) - want), <, 1e-3);
      }
  for (int i = 1; i < k; i++)
    g_assert_cmpfloat (sigma[i], <=, sigma[i - 1]);
  g_assert_cmpfloat (sigma[k - 1], >, 0);
  /* u_0 = J v_0 / sigma_0, and J^T u_0 ~ sigma_0 v_0 once converged. */
  float tt = (float) t;
  g_assert_true (ddim_unet_hspace_jvp (m->unet, x, 1, S, S, &tt, v, NULL, jv, &error));
  for (gsize i = 0; i < hs; i++)
    jv[i] = (float) (jv[i] / sigma[0]);
  g_assert_cmpfloat (max_abs_diff (jv, u, hs), <, 1e-4 * max_abs (u, hs) + 1e-6);
  g_assert_true (ddim_unet_hspace_vjp (m->unet, x, 1, S, S, &tt, u, NULL, jtu, &error));
  double c = dotd (jtu, v, xs) / sqrt (dotd (jtu, jtu, xs));
  g_test_message ("cos(J^T u_0, v_0) = %.6f", c);
  g_assert_cmpfloat (c, >, 0.99);

  /* Editable in both spaces, at the direction's own timestep. */
  DdimDirection *c2 = ddim_direction_set_lookup (set, "component-2", &error);
  DdimDirection *c2h = ddim_direction_set_lookup (set, "component-2-h", &error);
  g_assert_cmpint (ddim_edit_default_t_edit (c2, m->schedule), ==, t);
  g_assert_cmpint (ddim_edit_default_t_edit (c2h, m->schedule), ==, t);
  DdimRunOptions ro = run_options (m);
  g_autofree float *y = g_memdup2 (x, xs * sizeof (float));
  g_assert_true (ddim_edit (m->unet, m->schedule, y, 1, S, S, c2, 1.0, -1, &ro, &error));
  g_assert_no_error (error);
  g_assert_true (ddim_edit (m->unet, m->schedule, y, 1, S, S, c2h, 1.0, -1, &ro, &error));
  g_assert_no_error (error);

  /* Partial inversion lands on a sampling timestep at or below t. */
  g_autofree float *img = g_new (float, xs);
  ddim_randn (6, img, xs);
  int reached = -1;
  g_assert_true (ddim_invert_to_timestep (m->unet, m->schedule, img, S, S, &ro, 550, &reached,
                                          &error));
  g_assert_cmpint (reached, ==, 500);
  /* Too many components. */
  o.k = (int) xs + 1;
  g_assert_false (ddim_jacobian_svd (m->unet, x, S, S, t, &o, v, NULL, sigma, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
}

static void
test_pca_directions (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  int hc, hh, hw;
  gsize xs = image_size (m), hs = hspace_size (m, &hc, &hh, &hw);
  int n = 6, k = 3;
  g_autofree float *lat = g_new (float, n * xs);
  ddim_randn (77, lat, n * xs);
  DdimRunOptions ro = run_options (m);
  DdimDiscoverOptions o;
  ddim_discover_options_init (&o);
  o.k = k;
  o.model_sha256 = m->weights_sha256;
  g_autoptr (GError) error = NULL;
  for (int pool = 0; pool < 2; pool++)
    {
      g_autoptr (DdimDirectionSet) set =
          ddim_discover_pca (m->unet, m->schedule, lat, n, S, S, &ro, -1, -1, pool, &o, &error);
      g_assert_no_error (error);
      g_assert_cmpuint (ddim_direction_set_get_n (set), ==, k);
      gsize D = pool ? (gsize) hc : hs;
      for (int i = 0; i < k; i++)
        {
          DdimDirection *di = ddim_direction_set_get_nth (set, i);
          g_assert_cmpint (di->kind, ==, DDIM_DIRECTION_PCA);
          g_assert_cmpint (di->ndim, ==, pool ? 1 : 3);
          g_assert_cmpuint (ddim_direction_get_n_elements (di), ==, D);
          if (i > 0)
            g_assert_cmpfloat (di->sigma, <=, ddim_direction_set_get_nth (set, i - 1)->sigma);
          for (int j = 0; j < k; j++)
            {
              DdimDirection *dj = ddim_direction_set_get_nth (set, j);
              g_assert_cmpfloat (fabs (dotd (di->data, dj->data, D) - (i == j)), <, 1e-4);
            }
        }
      g_assert_nonnull (ddim_direction_set_lookup (set, "component-3", &error));
    }
  /* Too few samples for k components. */
  o.k = 50;
  g_assert_null (ddim_discover_pca (m->unet, m->schedule, lat, 2, S, S, &ro, -1, -1, FALSE, &o,
                                    &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
}

/* ---- supervised directions ---------------------------------------------- */

/* @n latents of @xs values, N(@shift, 1) from @seed: two such sets with
 * different shifts are the synthetic classes the fitting tests separate
 * (g_free). */
static float *
shifted_latents (guint64 seed, int n, gsize xs, float shift)
{
  float *l = g_new (float, n * xs);
  ddim_randn (seed, l, n * xs);
  for (gsize i = 0; i < n * xs; i++)
    l[i] += shift;
  return l;
}

static void
test_fit (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  int hc, hh, hw;
  gsize xs = image_size (m), hs = hspace_size (m, &hc, &hh, &hw);
  int np = 3, nn = 4;
  /* Two synthetic classes of images: bright and dark, with noise. */
  g_autoptr (GRand) r = g_rand_new_with_seed (3);
  g_autofree float *pos = g_new (float, np * xs), *neg = g_new (float, nn * xs);
  for (gsize i = 0; i < np * xs; i++)
    pos[i] = (float) (0.5 + g_rand_double_range (r, -0.3, 0.3));
  for (gsize i = 0; i < nn * xs; i++)
    neg[i] = (float) (-0.5 + g_rand_double_range (r, -0.3, 0.3));
  DdimFitOptions o;
  ddim_fit_options_init (&o, m->schedule);
  o.run.steps = STEPS;
  o.model_sha256 = m->weights_sha256;
  o.description = "bright vs dark";
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDirection) d = ddim_fit_direction (m->unet, m->schedule, "bright", pos, np, neg,
                                                    nn, S, S, &o, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (fabs (sqrt (dotd (d->data, d->data, hs)) - 1), <, 1e-5);
  g_assert_cmpint (d->space, ==, DDIM_SPACE_H);
  g_assert_cmpint (d->t_min, ==, 500);
  g_assert_cmpstr (d->model_sha256, ==, m->weights_sha256);
  g_assert_cmpfloat (d->sigma, >, 0);
  g_assert_cmpfloat (d->strength_max, >, 0);
  g_assert_cmpstr (d->method, ==, "mean-difference");

  /* Latent inputs, interval of the first sampling step only: the direction
   * is then exactly the normalised mean difference of h(x_T, t_0), which
   * the test computes itself. It points from the negatives to the
   * positives: every positive projects higher than every negative mean. */
  DdimFitOptions ol = o;
  ol.latents = TRUE;
  ol.t_min = ol.t_max = 900;
  g_autofree float *lp = shifted_latents (50, np, xs, 0.3f);
  g_autofree float *ln = shifted_latents (51, nn, xs, 0);
  g_autoptr (DdimDirection) dl = ddim_fit_direction (m->unet, m->schedule, "shifted", lp, np,
                                                     ln, nn, S, S, &ol, &error);
  g_assert_no_error (error);
  g_autofree float *hp = g_new (float, np * hs), *hn = g_new (float, nn * hs);
  g_autofree float *out = g_new (float, nn * xs);
  float tp[4] = { 900, 900, 900, 900 };
  g_assert_true (ddim_unet_forward_pair (m->unet, lp, np, S, S, tp, NULL, hp, out, NULL, &error));
  g_assert_true (ddim_unet_forward_pair (m->unet, ln, nn, S, S, tp, NULL, hn, out, NULL, &error));
  g_autofree double *diff = g_new0 (double, hs);
  for (gsize i = 0; i < hs; i++)
    {
      for (int b = 0; b < np; b++)
        diff[i] += hp[b * hs + i] / np;
      for (int b = 0; b < nn; b++)
        diff[i] -= hn[b * hs + i] / nn;
    }
  double dn = 0, cosv = 0;
  for (gsize i = 0; i < hs; i++)
    {
      dn += diff[i] * diff[i];
      cosv += diff[i] * dl->data[i];
    }
  cosv /= sqrt (dn);
  g_assert_cmpfloat (cosv, >, 0.99999);
  g_assert_cmpfloat (fabs (dl->sigma - sqrt (dn)), <, 1e-4 * sqrt (dn));

  /* Logistic boundary: unit norm, same orientation; pooled: [C]. */
  ol.method = DDIM_FIT_LOGISTIC;
  g_autoptr (DdimDirection) dlog = ddim_fit_direction (m->unet, m->schedule, "boundary", lp, np,
                                                       ln, nn, S, S, &ol, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (fabs (sqrt (dotd (dlog->data, dlog->data, hs)) - 1), <, 1e-5);
  g_assert_cmpfloat (dotd (dlog->data, dl->data, hs), >, 0);
  g_assert_cmpstr (dlog->method, ==, "logistic");
  for (int b = 0; b < np; b++)
    for (int c = 0; c < nn; c++)
      g_assert_cmpfloat (dotd (hp + b * hs, dlog->data, hs), >, dotd (hn + c * hs, dlog->data, hs));
  /* Prototype: from the negatives' mean to the positive nearest the
   * positives' mean, which the test finds itself. */
  int nearest = -1;
  double nearest_d2 = 0;
  for (int b = 0; b < np; b++)
    {
      double d2 = 0;
      for (gsize i = 0; i < hs; i++)
        {
          double mp = 0;
          for (int c = 0; c < np; c++)
            mp += hp[c * hs + i] / (double) np;
          d2 += (hp[b * hs + i] - mp) * (hp[b * hs + i] - mp);
        }
      if (nearest < 0 || d2 < nearest_d2)
        nearest = b, nearest_d2 = d2;
    }
  g_autofree double *pdiff = g_new0 (double, hs);
  double pn = 0, pcos = 0;
  for (gsize i = 0; i < hs; i++)
    {
      pdiff[i] = hp[nearest * hs + i];
      for (int b = 0; b < nn; b++)
        pdiff[i] -= hn[b * hs + i] / nn;
      pn += pdiff[i] * pdiff[i];
    }
  ol.method = DDIM_FIT_PROTOTYPE;
  g_autoptr (DdimDirection) dproto = ddim_fit_direction (m->unet, m->schedule, "typical", lp, np,
                                                         ln, nn, S, S, &ol, &error);
  g_assert_no_error (error);
  for (gsize i = 0; i < hs; i++)
    pcos += pdiff[i] * dproto->data[i];
  pcos /= sqrt (pn);
  g_test_message ("prototype: positive %d, cos to the expected %.7f, to the mean difference %.4f",
                  nearest, pcos, dotd (dproto->data, dl->data, hs));
  g_assert_cmpfloat (pcos, >, 0.99999);
  g_assert_cmpfloat (fabs (dproto->sigma - sqrt (pn)), <, 1e-4 * sqrt (pn));
  g_assert_cmpfloat (dotd (dproto->data, dl->data, hs), <, 0.999);
  g_assert_cmpfloat (dproto->strength_max, ==, 2 * dproto->sigma);
  g_assert_cmpstr (dproto->method, ==, "prototype");
  /* With one positive it is the mean difference. */
  g_autoptr (DdimDirection) one_proto = ddim_fit_direction (m->unet, m->schedule, "one", lp, 1, ln,
                                                            nn, S, S, &ol, &error);
  ol.method = DDIM_FIT_MEAN_DIFFERENCE;
  g_autoptr (DdimDirection) one_mean = ddim_fit_direction (m->unet, m->schedule, "one", lp, 1, ln,
                                                           nn, S, S, &ol, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (one_proto->data, hs * sizeof (float), one_mean->data, hs * sizeof (float));

  ol.pool_space = TRUE;
  g_autoptr (DdimDirection) dpool = ddim_fit_direction (m->unet, m->schedule, "pooled", lp, np,
                                                        ln, nn, S, S, &ol, &error);
  g_assert_no_error (error);
  g_assert_cmpint (dpool->ndim, ==, 1);
  g_assert_cmpint (dpool->channels, ==, hc);
  g_assert_cmpfloat (fabs (sqrt (dotd (dpool->data, dpool->data, hc)) - 1), <, 1e-5);

  /* Method names round-trip; another is refused. */
  for (DdimFitMethod k = DDIM_FIT_MEAN_DIFFERENCE; k <= DDIM_FIT_PROTOTYPE; k++)
    {
      DdimFitMethod back = DDIM_FIT_MEAN_DIFFERENCE;
      g_assert_true (ddim_fit_method_from_string (ddim_fit_method_to_string (k), &back, &error));
      g_assert_cmpint (back, ==, k);
    }
  DdimFitMethod unused;
  g_assert_false (ddim_fit_method_from_string ("medoid", &unused, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);

  /* Errors: an empty set, an interval no step falls in. */
  g_assert_null (ddim_fit_direction (m->unet, m->schedule, "x", lp, np, ln, 0, S, S, &ol, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  ol.t_min = 901;
  ol.t_max = 950;
  g_assert_null (ddim_fit_direction (m->unet, m->schedule, "x", lp, np, ln, nn, S, S, &ol, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
}

/* ---- per-timestep directions -------------------------------------------- */

static void assert_same_direction (const DdimDirection *a, const DdimDirection *b);

/* A direction file of @format holding one tensor @ndim x @shape with
 * metadata @json, loaded: NULL and DDIM_ERROR_FORMAT expected. */
static void
assert_bad_direction_file (const char *format, int ndim, const gint64 *shape, const char *json)
{
  gsize n = 1;
  for (int k = 0; k < ndim; k++)
    n *= shape[k];
  g_autofree float *zeros = g_new0 (float, n);
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  ddim_safetensors_writer_add_metadata (w, "format", format);
  ddim_safetensors_writer_add_f32 (w, "direction.bad", ndim, shape, zeros);
  ddim_safetensors_writer_add_metadata (w, "direction.bad", json);
  g_autoptr (GBytes) bytes = ddim_safetensors_writer_to_bytes (w);
  g_autoptr (GError) error = NULL;
  g_assert_null (ddim_direction_set_new_from_bytes (bytes, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_test_message ("%s", error->message);
}

static void
assert_file_format (GBytes *bytes, const char *format)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (ddim_safetensors_get_metadata (st, "format"), ==, format);
}

/* Fitting per timestep keeps one block per sampling step of the interval,
 * whose normalised mean is the pooled direction; the file keeps the
 * blocks; the editor interpolates between them, and a direction whose
 * blocks are all the same edits exactly as the single one. */
static void
test_per_timestep (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  int hc, hh, hw;
  gsize xs = image_size (m), hs = hspace_size (m, &hc, &hh, &hw);
  int np = 3, nn = 4;
  g_autofree float *lp = shifted_latents (50, np, xs, 0.3f);
  g_autofree float *ln = shifted_latents (51, nn, xs, 0);
  DdimFitOptions o;
  ddim_fit_options_init (&o, m->schedule);
  o.run.steps = STEPS;
  o.latents = TRUE;
  o.model_sha256 = m->weights_sha256;
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDirection) pooled = ddim_fit_direction (m->unet, m->schedule, "pooled", lp, np,
                                                         ln, nn, S, S, &o, &error);
  g_assert_no_error (error);
  o.per_timestep = TRUE;
  g_autoptr (DdimDirection) d = ddim_fit_direction (m->unet, m->schedule, "per-step", lp, np, ln,
                                                    nn, S, S, &o, &error);
  g_assert_no_error (error);

  /* One block per sampling timestep in [500, 999], descending. */
  g_autofree int *ts = ddim_schedule_timesteps (m->schedule, STEPS, o.run.spacing, &error);
  g_assert_no_error (error);
  int n = 0;
  for (int i = 0; i < STEPS; i++)
    if (ts[i] >= 500)
      {
        g_assert_cmpint (n, <, d->n_timesteps);
        g_assert_cmpint (d->timesteps[n], ==, ts[i]);
        n++;
      }
  g_assert_cmpint (d->n_timesteps, ==, n);
  g_assert_cmpint (n, >=, 2);
  g_assert_cmpuint (ddim_direction_get_n_elements (d), ==, n * hs);
  g_assert_cmpuint (ddim_direction_get_block_elements (d), ==, hs);
  g_assert_cmpint (d->t_min, ==, 500);
  g_autofree char *shape = ddim_direction_shape_string (d);
  g_autofree char *want_shape = g_strdup_printf ("[%d, %d, %d] at %d timesteps", hc, hh, hw, n);
  g_assert_cmpstr (shape, ==, want_shape);

  /* Blocks of RMS norm 1; their mean points along the pooled direction;
   * sigma is the RMS of the per-step distances, at least the pooled one. */
  double ss = 0;
  g_autofree float *mean = g_new0 (float, hs);
  for (int k = 0; k < n; k++)
    for (gsize i = 0; i < hs; i++)
      {
        float v = d->data[k * hs + i];
        ss += (double) v * v;
        mean[i] += v / n;
      }
  g_assert_cmpfloat (fabs (sqrt (ss / n) - 1), <, 1e-5);
  double cosv = dotd (mean, pooled->data, hs) / sqrt (dotd (mean, mean, hs));
  g_test_message ("per-timestep: %d blocks, cos(mean block, pooled) = %.7f, sigma %.4f vs "
                  "pooled %.4f", n, cosv, d->sigma, pooled->sigma);
  g_assert_cmpfloat (cosv, >, 0.99999);
  g_assert_cmpfloat (d->sigma, >=, pooled->sigma * (1 - 1e-6));
  g_assert_cmpfloat (d->strength_max, ==, 2 * d->sigma);

  /* The file keeps it. */
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  ddim_direction_set_add (set, ddim_direction_copy (d));
  g_autoptr (GBytes) bytes = ddim_direction_set_to_bytes (set);
  g_autoptr (DdimDirectionSet) back = ddim_direction_set_new_from_bytes (bytes, &error);
  g_assert_no_error (error);
  const DdimDirection *b = ddim_direction_set_get_nth (back, 0);
  assert_same_direction (d, b);
  g_assert_cmpint (b->n_timesteps, ==, n);
  g_assert_cmpmem (b->timesteps, n * sizeof (int), d->timesteps, n * sizeof (int));
  /* ... as format 2, which older readers refuse as newer; a file of
   * single directions stays format 1. */
  assert_file_format (bytes, DDIM_DIRECTIONS_FORMAT_PER_TIMESTEP);
  g_autoptr (DdimDirectionSet) singles = ddim_direction_set_new ();
  ddim_direction_set_add (singles, ddim_direction_copy (pooled));
  g_autoptr (GBytes) single_bytes = ddim_direction_set_to_bytes (singles);
  assert_file_format (single_bytes, DDIM_DIRECTIONS_FORMAT);

  /* Expansion: the blocks at their timesteps, the end blocks beyond, the
   * linear mix between. */
  g_autofree float *e = g_new (float, hs), *want = g_new (float, hs);
  ddim_direction_expand (d, 2.0, d->timesteps[1], hh, hw, e);
  for (gsize i = 0; i < hs; i++)
    want[i] = 2.0f * d->data[hs + i];
  g_assert_cmpmem (e, hs * sizeof (float), want, hs * sizeof (float));
  ddim_direction_expand (d, 1.0, 999, hh, hw, e);
  g_assert_cmpmem (e, hs * sizeof (float), d->data, hs * sizeof (float));
  ddim_direction_expand (d, 1.0, 0, hh, hw, e);
  g_assert_cmpmem (e, hs * sizeof (float), d->data + (n - 1) * hs, hs * sizeof (float));
  int t_mid = d->timesteps[0] - (d->timesteps[0] - d->timesteps[1]) / 4;
  double wb = (double) (d->timesteps[0] - t_mid) / (d->timesteps[0] - d->timesteps[1]);
  ddim_direction_expand (d, 1.0, t_mid, hh, hw, e);
  for (gsize i = 0; i < hs; i++)
    want[i] = (float) ((1 - wb) * d->data[i] + wb * d->data[hs + i]);
  g_assert_cmpfloat (max_abs_diff (e, want, hs), <, 1e-6);

  /* A per-timestep direction with the same block everywhere edits as the
   * single direction, bit for bit; strength 0 is the plain reconstruction. */
  g_autoptr (DdimDirection) u = random_h_direction (m, "u", 5);
  g_autoptr (DdimDirection) flat = ddim_direction_new_per_timestep ("flat", 3, hc, hh, hw, n,
                                                                    d->timesteps);
  for (int k = 0; k < n; k++)
    memcpy (flat->data + k * hs, u->data, hs * sizeof (float));
  DdimRunOptions ro = run_options (m);
  g_autofree float *xa = g_new (float, xs), *xb = g_new (float, xs), *x0 = g_new (float, xs);
  ddim_randn (60, xa, xs);
  memcpy (xb, xa, xs * sizeof (float));
  memcpy (x0, xa, xs * sizeof (float));
  g_assert_true (ddim_edit (m->unet, m->schedule, xa, 1, S, S, u, 3.0, 500, &ro, &error));
  g_assert_true (ddim_edit (m->unet, m->schedule, xb, 1, S, S, flat, 3.0, 500, &ro, &error));
  g_assert_no_error (error);
  g_assert_cmpmem (xa, xs * sizeof (float), xb, xs * sizeof (float));
  g_autofree float *plain = g_memdup2 (x0, xs * sizeof (float));
  g_assert_true (ddim_sample (m->unet, m->schedule, plain, 1, S, S, &ro, &error));
  g_assert_true (ddim_edit (m->unet, m->schedule, x0, 1, S, S, d, 0.0, -1, &ro, &error));
  g_assert_cmpmem (x0, xs * sizeof (float), plain, xs * sizeof (float));
  /* ... and the fitted one changes the image. */
  ddim_randn (60, xb, xs);
  g_assert_true (ddim_edit (m->unet, m->schedule, xb, 1, S, S, d, d->strength_max, -1, &ro,
                            &error));
  g_assert_cmpfloat (max_abs_diff (xb, plain, xs), >, 1e-3);
  /* A bad edit timestep is refused as for single directions. */
  g_assert_false (ddim_edit (m->unet, m->schedule, xb, 1, S, S, d, 1.0, 5000, &ro, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);

  /* Errors: fewer than 2 steps in the interval; malformed files. */
  o.t_min = o.t_max = 900;
  g_assert_null (ddim_fit_direction (m->unet, m->schedule, "x", lp, np, ln, nn, S, S, &o,
                                     &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_test_message ("%s", error->message);
  g_clear_error (&error);
  const gint64 four[4] = { 2, 2, 1, 1 }, three[3] = { 2, 1, 1 };
  const char *v2 = DDIM_DIRECTIONS_FORMAT_PER_TIMESTEP;
  assert_bad_direction_file (v2, 4, four, "{\"space\": \"h\"}");
  assert_bad_direction_file (v2, 3, three, "{\"space\": \"h\", \"timesteps\": [900, 800]}");
  assert_bad_direction_file (v2, 4, four, "{\"space\": \"h\", \"timesteps\": [800, 900]}");
  assert_bad_direction_file (v2, 4, four,
                             "{\"space\": \"h\", \"timesteps\": [900, 800, 700]}");
  assert_bad_direction_file (v2, 4, four, "{\"space\": \"x\", \"timesteps\": [900, 800]}");
  assert_bad_direction_file (v2, 3, three, "{\"space\": \"h\", \"method\": 1}");
  /* A well-formed per-timestep direction in a format-1 file. */
  assert_bad_direction_file (DDIM_DIRECTIONS_FORMAT, 4, four,
                             "{\"space\": \"h\", \"timesteps\": [900, 800]}");
}

/* ---- the directions file ------------------------------------------------ */

static void
assert_same_direction (const DdimDirection *a, const DdimDirection *b)
{
  g_assert_cmpstr (a->name, ==, b->name);
  g_assert_cmpstr (a->description, ==, b->description);
  g_assert_cmpint (a->kind, ==, b->kind);
  g_assert_cmpint (a->space, ==, b->space);
  g_assert_cmpint (a->ndim, ==, b->ndim);
  g_assert_cmpint (a->channels, ==, b->channels);
  g_assert_cmpint (a->height, ==, b->height);
  g_assert_cmpint (a->width, ==, b->width);
  g_assert_cmpint (a->t_min, ==, b->t_min);
  g_assert_cmpint (a->t_max, ==, b->t_max);
  g_assert_cmpfloat (a->strength_min, ==, b->strength_min);
  g_assert_cmpfloat (a->strength_max, ==, b->strength_max);
  g_assert_cmpfloat (a->sigma, ==, b->sigma);
  g_assert_cmpstr (a->model_sha256, ==, b->model_sha256);
  g_assert_cmpstr (a->method, ==, b->method);
  g_assert_cmpint (a->hspace_channels, ==, b->hspace_channels);
  g_assert_cmpint (a->hspace_height, ==, b->hspace_height);
  g_assert_cmpint (a->hspace_width, ==, b->hspace_width);
  g_assert_cmpint (a->n_timesteps, ==, b->n_timesteps);
  if (a->n_timesteps > 0)
    g_assert_cmpmem (a->timesteps, a->n_timesteps * sizeof (int), b->timesteps,
                     b->n_timesteps * sizeof (int));
  gsize n = ddim_direction_get_n_elements (a);
  g_assert_cmpmem (a->data, n * sizeof (float), b->data, n * sizeof (float));
}

static void
test_directions_file (void)
{
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  DdimDirection *a = ddim_direction_new ("smile", DDIM_SPACE_H, 3, 8, 2, 2);
  ddim_randn (1, a->data, 32);
  g_free (a->description);
  a->description = g_strdup ("Smiling \"faces\" — ünïcode");
  a->t_min = 400;
  a->t_max = 999;
  a->strength_min = -3.25;
  a->strength_max = 0.1 + 0.2;   /* round-trips as the same double */
  a->sigma = 1.0 / 3;
  g_free (a->model_sha256);
  a->model_sha256 = g_strdup ("abc123");
  a->hspace_channels = 8;
  a->hspace_height = 2;
  a->hspace_width = 2;
  ddim_direction_set_add (set, a);
  DdimDirection *b = ddim_direction_new ("pca-1", DDIM_SPACE_H, 1, 8, 0, 0);
  b->kind = DDIM_DIRECTION_PCA;
  ddim_randn (2, b->data, 8);
  ddim_direction_set_add (set, b);
  DdimDirection *c = ddim_direction_new ("jac-1", DDIM_SPACE_X, 3, 3, 4, 4);
  c->kind = DDIM_DIRECTION_UNSUPERVISED;
  ddim_randn (3, c->data, 48);
  ddim_direction_set_add (set, c);

  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) bytes = ddim_direction_set_to_bytes (set);
  g_autoptr (DdimDirectionSet) back = ddim_direction_set_new_from_bytes (bytes, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_direction_set_get_n (back), ==, 3);
  for (guint i = 0; i < 3; i++)
    assert_same_direction (ddim_direction_set_get_nth (set, i),
                           ddim_direction_set_get_nth (back, i));

  g_autofree char *dir = g_dir_make_tmp ("ddim-edit-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *path = g_build_filename (dir, "directions.safetensors", NULL);
  g_assert_true (ddim_direction_set_save (set, path, &error));
  g_autoptr (DdimDirectionSet) loaded = ddim_direction_set_load (path, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < 3; i++)
    assert_same_direction (ddim_direction_set_get_nth (set, i),
                           ddim_direction_set_get_nth (loaded, i));

  /* Lookup: names, "component-N" (the N-th unsupervised or PCA one),
   * unknown names listing the available ones. */
  g_assert_true (ddim_direction_set_lookup (set, "smile", &error) == a);
  g_assert_true (ddim_direction_set_lookup (set, "component-1", &error) == b);
  g_assert_true (ddim_direction_set_lookup (set, "component-2", &error) == c);
  g_assert_null (ddim_direction_set_lookup (set, "component-3", &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_null (ddim_direction_set_lookup (set, "frown", &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "frown"));
  g_assert_nonnull (strstr (error->message, "smile, pca-1, jac-1"));
  g_clear_error (&error);

  /* Replacing by name keeps the order. */
  DdimDirection *a2 = ddim_direction_copy (a);
  a2->sigma = 7;
  ddim_direction_set_add (set, a2);
  g_assert_cmpuint (ddim_direction_set_get_n (set), ==, 3);
  g_assert_cmpfloat (ddim_direction_set_get_nth (set, 0)->sigma, ==, 7);

  /* Not a directions file; a newer format; a tensor without metadata. */
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  float z[2] = { 0, 0 };
  gint64 shape[1] = { 2 };
  ddim_safetensors_writer_add_f32 (w, "direction.a", 1, shape, z);
  g_autoptr (GBytes) plain = ddim_safetensors_writer_to_bytes (w);
  g_assert_null (ddim_direction_set_new_from_bytes (plain, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_clear_error (&error);
  ddim_safetensors_writer_add_metadata (w, "format", "ddim-directions/3");
  g_autoptr (GBytes) newer = ddim_safetensors_writer_to_bytes (w);
  g_assert_null (ddim_direction_set_new_from_bytes (newer, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED);
  g_clear_error (&error);
  ddim_safetensors_writer_add_metadata (w, "format", "ddim-directions/0");
  g_autoptr (GBytes) zeroth = ddim_safetensors_writer_to_bytes (w);
  g_assert_null (ddim_direction_set_new_from_bytes (zeroth, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_clear_error (&error);
  ddim_safetensors_writer_add_metadata (w, "format", DDIM_DIRECTIONS_FORMAT);
  g_autoptr (GBytes) nometa = ddim_safetensors_writer_to_bytes (w);
  g_assert_null (ddim_direction_set_new_from_bytes (nometa, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_clear_error (&error);
  ddim_safetensors_writer_add_metadata (w, "direction.a", "{\"kind\": 3}");
  g_autoptr (GBytes) badmeta = ddim_safetensors_writer_to_bytes (w);
  g_assert_null (ddim_direction_set_new_from_bytes (badmeta, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_clear_error (&error);

  g_remove (path);
  g_rmdir (dir);
}

/* ---- errors users meet -------------------------------------------------- */

static void
test_errors (void)
{
  REQUIRE_FIXTURE (m, "tiny-cifar");
  g_autoptr (DdimModel) other = load_fixture ("tiny-variant");
  int S = ddim_unet_get_config (m->unet)->sample_size;
  gsize xs = image_size (m);
  DdimRunOptions o = run_options (m);
  g_autofree float *x = g_new (float, xs);
  ddim_randn (1, x, xs);
  g_autoptr (GError) error = NULL;

  /* A direction of another model: shape mismatch naming both shapes. */
  g_autoptr (DdimDirection) foreign = random_h_direction (other, "foreign", 1);
  g_assert_false (ddim_edit (m->unet, m->schedule, x, 1, S, S, foreign, 1.0, -1, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, "[64, 8, 8]"));
  g_assert_nonnull (strstr (error->message, "[64, 4, 4]"));
  g_clear_error (&error);
  g_autoptr (DdimDirection) fx = ddim_direction_new ("fx", DDIM_SPACE_X, 3, 1, 32, 32);
  g_assert_false (ddim_edit (m->unet, m->schedule, x, 1, S, S, fx, 1.0, -1, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_assert_nonnull (strstr (error->message, "[1, 32, 32]"));
  g_assert_nonnull (strstr (error->message, "[3, 16, 16]"));
  g_clear_error (&error);
  /* Same shape, another model's hash. */
  g_autoptr (DdimDirection) d = random_h_direction (m, "mine", 2);
  g_free (d->model_sha256);
  d->model_sha256 = g_strdup (other->weights_sha256);
  g_assert_false (ddim_direction_check (d, m->unet, m->weights_sha256, S, S, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_clear_error (&error);
  g_assert_true (ddim_direction_check (d, m->unet, NULL, S, S, &error));

  /* Strength NaN or infinite; edit timestep out of range. */
  g_assert_false (ddim_edit (m->unet, m->schedule, x, 1, S, S, d, NAN, -1, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (ddim_edit (m->unet, m->schedule, x, 1, S, S, d, -INFINITY, -1, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (ddim_edit (m->unet, m->schedule, x, 1, S, S, d, 1.0, 1000, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  /* Names. */
  g_assert_false (ddim_direction_name_is_valid ("", &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (ddim_direction_name_is_valid ("two words", NULL));
  g_assert_true (ddim_direction_name_is_valid ("component-1-h", NULL));
  /* Cancellation. */
  g_autoptr (GCancellable) cancel = g_cancellable_new ();
  g_cancellable_cancel (cancel);
  o.cancellable = cancel;
  g_assert_false (ddim_edit (m->unet, m->schedule, x, 1, S, S, d, 1.0, -1, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/ops/jvp", test_op_jvps);
  g_test_add_func ("/unet/forward-pair", test_forward_pair);
  g_test_add_func ("/unet/hspace-jvp", test_hspace_jvp);
  g_test_add_func ("/unet/hspace-jvp-variants", test_hspace_jvp_variants);
  g_test_add_func ("/edit/strength-zero-exact", test_strength_zero_exact);
  g_test_add_func ("/edit/continuity", test_edit_continuity);
  g_test_add_func ("/edit/bdia-strength-zero", test_bdia_strength_zero);
  g_test_add_func ("/edit/change-evaluations", test_edit_change_evaluations);
  g_test_add_func ("/edit/bdia-edit", test_bdia_edit);
  g_test_add_func ("/edit/defaults", test_edit_defaults);
  g_test_add_func ("/edit/interpolation", test_interpolation);
  g_test_add_func ("/edit/jacobian-directions", test_jacobian_directions);
  g_test_add_func ("/edit/pca-directions", test_pca_directions);
  g_test_add_func ("/edit/fit", test_fit);
  g_test_add_func ("/edit/per-timestep", test_per_timestep);
  g_test_add_func ("/edit/directions-file", test_directions_file);
  g_test_add_func ("/edit/errors", test_errors);
  return g_test_run ();
}
