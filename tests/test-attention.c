/* The vectorised exponential and softmax against libm, and the tiled
 * attention forward (online softmax over blocks of keys, tiles shared
 * between threads) against a plain double-precision attention: token
 * counts and tile sizes with remainders, one to several heads, with and
 * without group norm, one and two threads; and its scratch memory stays
 * linear in the tokens. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "ops/arena.h"
#include "ops/ops.h"
#include "ops/parallel.h"
#include "ops/softmax.h"

/* Distance in units in the last place between two finite floats. */
static double
ulp_distance (float a, float b)
{
  if (a == b)
    return 0;
  int32_t ia, ib;
  memcpy (&ia, &a, sizeof ia);
  memcpy (&ib, &b, sizeof ib);
  /* Map the sign-magnitude bit patterns onto a monotonic integer line. */
  int64_t la = ia < 0 ? (int64_t) INT32_MIN - ia : ia;
  int64_t lb = ib < 0 ? (int64_t) INT32_MIN - ib : ib;
  return (double) llabs (la - lb);
}

typedef void (*ExpFunc) (const float *x, float *y, gsize n);

/* Every float in [-88, 89] at a fine spacing, plus the edges. */
static void
check_exp (const char *name, ExpFunc f)
{
  GArray *xs = g_array_new (FALSE, FALSE, sizeof (float));
  for (double x = -88.0; x <= 89.0; x += 1.0 / 4096)
    {
      float v = (float) x;
      g_array_append_val (xs, v);
    }
  static const float edges[] = {
    0.f, -0.f, 1e-30f, -1e-30f, 1e-7f, -1e-7f, 0.5f, -0.5f, 0.34657359f, -0.34657359f,
    1.f, -1.f, 10.f, -10.f, 88.72283f, 88.7228394f, 88.8f, 100.f, 1e30f, -87.3365402f,
    -87.3365479f, -87.34f, -100.f, -103.97f, -104.f, -1000.f, -1e30f, -FLT_MAX, FLT_MAX,
  };
  for (guint i = 0; i < G_N_ELEMENTS (edges); i++)
    g_array_append_val (xs, edges[i]);
  float inf = INFINITY, nan = NAN;
  g_array_append_val (xs, inf);
  float minus_inf = -INFINITY;
  g_array_append_val (xs, minus_inf);
  g_array_append_val (xs, nan);

  gsize n = xs->len;
  const float *x = (const float *) xs->data;
  float *y = g_new (float, n);
  f (x, y, n);
  double worst = 0;
  float worst_x = 0;
  for (gsize i = 0; i < n; i++)
    {
      float ref = expf (x[i]);
      if (isnan (x[i]))
        {
          g_assert_true (isnan (y[i]));
          continue;
        }
      if (ref >= FLT_MIN && isfinite (ref))
        {
          g_assert_true (isfinite (y[i]));
          double u = ulp_distance (y[i], ref);
          if (u > worst)
            {
              worst = u;
              worst_x = x[i];
            }
        }
      else if (isinf (ref))
        g_assert_true (isinf (y[i]) && y[i] > 0);
      else
        {
          /* Would be subnormal or 0: flushed to 0 (expf's value is below FLT_MIN). */
          g_assert_cmpfloat (y[i], ==, 0.f);
          g_assert_false (signbit (y[i]));
        }
    }
  g_test_message ("%s: worst %.0f ulp (x = %.9g) over %zu values", name, worst, worst_x,
                  (size_t) n);
  g_assert_cmpfloat (worst, <=, 2);

  /* Every length (the tail goes through a padded copy), and in place. */
  for (gsize len = 0; len <= 19; len++)
    {
      float a[19], b[19];
      for (gsize i = 0; i < len; i++)
        a[i] = b[i] = -3.f + 0.7f * (float) i;
      f (a, a, len);
      for (gsize i = 0; i < len; i++)
        g_assert_cmpfloat (ulp_distance (a[i], expf (b[i])), <=, 2);
    }
  g_free (y);
  g_array_free (xs, TRUE);
}

static void
test_exp (void)
{
  check_exp ("ddim_vexp", ddim_vexp);
}

static void
test_exp_portable (void)
{
  check_exp ("ddim_vexp_portable", ddim_vexp_portable);
}

static void
test_max (void)
{
  float x[37];
  for (gsize n = 1; n <= G_N_ELEMENTS (x); n++)
    for (gsize at = 0; at < n; at++)
      {
        for (gsize i = 0; i < n; i++)
          x[i] = -50.f + (float) ((i * 7) % 11);
        x[at] = 100.f + (float) at;
        g_assert_cmpfloat (ddim_vmax (x, n), ==, 100.f + (float) at);
      }
  float with_nan[] = { -INFINITY, NAN, -3.f, NAN, -2.5f, -INFINITY, NAN, NAN, -7.f, NAN };
  g_assert_cmpfloat (ddim_vmax (with_nan, G_N_ELEMENTS (with_nan)), ==, -2.5f);
  float all_low[] = { -INFINITY, -INFINITY, -INFINITY };
  g_assert_cmpfloat (ddim_vmax (all_low, 3), ==, -INFINITY);
}

/* Rows whose scores reach 1e4 (exp would overflow without the maximum
 * subtracted), spread over 200 (most probabilities underflow), and lengths
 * around the vector width. */
static void
test_softmax (void)
{
  static const int lengths[] = { 1, 2, 7, 8, 9, 16, 33, 100 };
  static const float offsets[] = { 0.f, 1e4f, -1e4f };
  g_autoptr (GRand) r = g_rand_new_with_seed (7);
  for (guint li = 0; li < G_N_ELEMENTS (lengths); li++)
    for (guint oi = 0; oi < G_N_ELEMENTS (offsets); oi++)
      for (int spread = 1; spread <= 200; spread *= 20)
        {
          int cols = lengths[li], rows = 3;
          float *s = g_new (float, rows * cols);
          double *ref = g_new (double, rows * cols);
          double *tol = g_new (double, rows * cols);
          for (int i = 0; i < rows * cols; i++)
            s[i] = offsets[oi] + (float) g_rand_double_range (r, -spread, spread);
          for (int row = 0; row < rows; row++)
            {
              double m = -INFINITY, sum = 0;
              for (int j = 0; j < cols; j++)
                m = MAX (m, s[row * cols + j]);
              for (int j = 0; j < cols; j++)
                {
                  double shifted = (double) s[row * cols + j] - m;
                  sum += ref[row * cols + j] = exp (shifted);
                  /* s - max rounded to float is off by up to half an ulp
                   * of |s - max|, which exp turns into a relative error. */
                  tol[row * cols + j] = 1e-6 + fabs (shifted) * FLT_EPSILON;
                }
              for (int j = 0; j < cols; j++)
                ref[row * cols + j] /= sum;
            }
          ddim_softmax_rows (s, rows, cols);
          for (int i = 0; i < rows * cols; i++)
            {
              g_assert_true (isfinite (s[i]));
              if (ref[i] < FLT_MIN)
                g_assert_cmpfloat (s[i], <, FLT_MIN);
              else
                g_assert_cmpfloat (fabs (s[i] - ref[i]), <=, tol[i] * ref[i]);
            }
          g_free (s);
          g_free (ref);
          g_free (tol);
        }
}

/* ---- attention -------------------------------------------------------- */

typedef struct {
  int    n, c, hw, heads, groups;
  float *x, *gamma, *beta, *w[4], *b[4];
  DdimAttentionParams p;
} Case;

static float *
rand_floats (GRand *r, gsize n, double lo, double hi)
{
  float *v = g_new (float, MAX (n, 1));
  for (gsize i = 0; i < n; i++)
    v[i] = (float) g_rand_double_range (r, lo, hi);
  return v;
}

/* Weights large enough that the softmax is far from uniform (scores spread
 * over tens), so rescaling between key blocks matters. */
static void
case_init (Case *k, guint32 seed, int n, int c, int hw, int heads, gboolean gn)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  *k = (Case) { .n = n, .c = c, .hw = hw, .heads = heads, .groups = 2 };
  k->x = rand_floats (r, (gsize) n * c * hw, -1.5, 1.5);
  k->gamma = rand_floats (r, c, 0.5, 1.5);
  k->beta = rand_floats (r, c, -0.3, 0.3);
  for (int i = 0; i < 4; i++)
    {
      k->w[i] = rand_floats (r, (gsize) c * c, -1.2, 1.2);
      k->b[i] = rand_floats (r, c, -0.5, 0.5);
    }
  k->p = (DdimAttentionParams) {
    .gn_gamma = gn ? k->gamma : NULL, .gn_beta = gn ? k->beta : NULL,
    .gn_groups = k->groups, .gn_eps = 1e-6f,
    .q_w = k->w[0], .q_b = k->b[0], .k_w = k->w[1], .k_b = k->b[1],
    .v_w = k->w[2], .v_b = k->b[2], .o_w = k->w[3], .o_b = k->b[3],
    .heads = heads, .rescale = 2.f,
  };
}

static void
case_clear (Case *k)
{
  g_free (k->x);
  g_free (k->gamma);
  g_free (k->beta);
  for (int i = 0; i < 4; i++)
    {
      g_free (k->w[i]);
      g_free (k->b[i]);
    }
}

/* The whole score matrix at once, in double. */
static void
attention_ref (const Case *k, double *out, double *score_spread)
{
  int c = k->c, hw = k->hw, d = c / k->heads;
  gsize plane = (gsize) c * hw;
  double scale = 1.0 / sqrt ((double) d);
  double *xn = g_new (double, plane), *q = g_new (double, plane), *kk = g_new (double, plane);
  double *v = g_new (double, plane), *o = g_new (double, plane), *s = g_new (double, hw);
  double *proj[3] = { q, kk, v };
  *score_spread = 0;
  for (int b = 0; b < k->n; b++)
    {
      const float *xb = k->x + b * plane;
      if (k->p.gn_gamma)
        {
          int cpg = c / k->groups;
          for (int g = 0; g < k->groups; g++)
            {
              double mean = 0, var = 0;
              gsize cnt = (gsize) cpg * hw, off = (gsize) g * cpg * hw;
              for (gsize i = 0; i < cnt; i++)
                mean += xb[off + i];
              mean /= cnt;
              for (gsize i = 0; i < cnt; i++)
                var += (xb[off + i] - mean) * (xb[off + i] - mean);
              var /= cnt;
              for (gsize i = 0; i < cnt; i++)
                {
                  int ch = g * cpg + (int) (i / hw);
                  xn[off + i] = (xb[off + i] - mean) / sqrt (var + k->p.gn_eps) * k->gamma[ch]
                                + k->beta[ch];
                }
            }
        }
      else
        for (gsize i = 0; i < plane; i++)
          xn[i] = xb[i];
      for (int m = 0; m < 3; m++)
        for (int oc = 0; oc < c; oc++)
          for (int i = 0; i < hw; i++)
            {
              double t = k->b[m][oc];
              for (int ic = 0; ic < c; ic++)
                t += k->w[m][oc * c + ic] * xn[(gsize) ic * hw + i];
              proj[m][(gsize) oc * hw + i] = t;
            }
      for (int h = 0; h < k->heads; h++)
        for (int i = 0; i < hw; i++)
          {
            double mx = -INFINITY, mn = INFINITY, sum = 0;
            for (int j = 0; j < hw; j++)
              {
                double t = 0;
                for (int e = 0; e < d; e++)
                  t += q[(gsize) (h * d + e) * hw + i] * kk[(gsize) (h * d + e) * hw + j];
                s[j] = t * scale;
                mx = MAX (mx, s[j]);
                mn = MIN (mn, s[j]);
              }
            *score_spread = MAX (*score_spread, mx - mn);
            for (int j = 0; j < hw; j++)
              sum += (s[j] = exp (s[j] - mx));
            for (int e = 0; e < d; e++)
              {
                double t = 0;
                for (int j = 0; j < hw; j++)
                  t += v[(gsize) (h * d + e) * hw + j] * s[j];
                o[(gsize) (h * d + e) * hw + i] = t / sum;
              }
          }
      for (int oc = 0; oc < c; oc++)
        for (int i = 0; i < hw; i++)
          {
            double t = k->b[3][oc];
            for (int ic = 0; ic < c; ic++)
              t += k->w[3][oc * c + ic] * o[(gsize) ic * hw + i];
            out[b * plane + (gsize) oc * hw + i] = (t + xb[(gsize) oc * hw + i]) / k->p.rescale;
          }
    }
  g_free (xn);
  g_free (q);
  g_free (kk);
  g_free (v);
  g_free (o);
  g_free (s);
}

static double
max_abs_diff (const float *a, const double *b, gsize n)
{
  double m = 0;
  for (gsize i = 0; i < n; i++)
    m = MAX (m, fabs (a[i] - b[i]));
  return m;
}

/* Every tile shape against the reference, with 1 and 2 threads. */
static void
check_tiles (int c, int hw, int heads, gboolean gn)
{
  Case k;
  case_init (&k, 1000 + hw * 7 + heads, 2, c, hw, heads, gn);
  gsize total = (gsize) k.n * c * hw;
  double *ref = g_new (double, total);
  double spread;
  attention_ref (&k, ref, &spread);
  g_test_message ("c %d, %d tokens, %d heads%s: scores spread over up to %.1f", c, hw, heads,
                  gn ? ", group norm" : "", spread);
  if (hw >= 7)
    g_assert_cmpfloat (spread, >, 5);

  static const int q_tiles[] = { 0, 1, 3, 16, 100000 };
  static const int k_tiles[] = { 0, 1, 5, 64, 100000 };
  float *y = g_new (float, total);
  for (int threads = 1; threads <= 2; threads++)
    {
      DdimArena arena;
      ddim_arena_init (&arena);
      arena.parallel = ddim_parallel_new (threads);
      for (guint qi = 0; qi < G_N_ELEMENTS (q_tiles); qi++)
        for (guint ki = 0; ki < G_N_ELEMENTS (k_tiles); ki++)
          {
            memcpy (y, k.x, total * sizeof (float));
            ddim_attention_forward_tiles (y, k.n, c, hw, &k.p, q_tiles[qi], k_tiles[ki], &arena);
            g_assert_cmpuint (arena.used, ==, 0);
            double err = max_abs_diff (y, ref, total);
            if (err > 1e-4)
              g_error ("%d tokens, %d heads, tiles %d x %d, %d threads: off by %g", hw, heads,
                       q_tiles[qi], k_tiles[ki], threads, err);
          }
      /* The public entry point is the automatic tiling. */
      memcpy (y, k.x, total * sizeof (float));
      ddim_attention_forward (y, k.n, c, hw, &k.p, &arena);
      g_assert_cmpfloat (max_abs_diff (y, ref, total), <=, 1e-4);
      ddim_parallel_free (arena.parallel);
      ddim_arena_clear (&arena);
    }
  g_free (y);
  g_free (ref);
  case_clear (&k);
}

static void
test_attention_small (void)
{
  check_tiles (8, 1, 1, FALSE);
  check_tiles (8, 7, 2, TRUE);
  check_tiles (8, 64, 4, FALSE);
}

static void
test_attention_remainders (void)
{
  check_tiles (8, 130, 1, TRUE);
  check_tiles (16, 67, 4, TRUE);
  check_tiles (12, 97, 3, FALSE);
}

/* Above the automatic tile sizes (128 queries, 512 keys): several tiles
 * and key blocks, the last ones partial, shared between threads. */
static void
test_attention_many_tiles (void)
{
  int c = 8, hw = 1100, heads = 2;
  Case k;
  case_init (&k, 77, 1, c, hw, heads, TRUE);
  gsize total = (gsize) c * hw;
  double *ref = g_new (double, total);
  double spread;
  attention_ref (&k, ref, &spread);
  float *y = g_new (float, total);
  for (int threads = 1; threads <= 2; threads++)
    {
      DdimArena arena;
      ddim_arena_init (&arena);
      arena.parallel = ddim_parallel_new (threads);
      memcpy (y, k.x, total * sizeof (float));
      ddim_attention_forward (y, 1, c, hw, &k.p, &arena);
      g_assert_cmpfloat (max_abs_diff (y, ref, total), <=, 1e-4);
      ddim_parallel_free (arena.parallel);
      ddim_arena_clear (&arena);
    }
  g_free (y);
  g_free (ref);
  case_clear (&k);
}

/* The scratch of a forward grows with the tokens, not their square: at
 * 8192 tokens the score matrix alone would be 256 MiB. */
static void
test_attention_memory (void)
{
  int c = 8, hw = 8192, heads = 1;
  Case k;
  case_init (&k, 5, 1, c, hw, heads, FALSE);
  DdimArena arena;
  ddim_arena_init (&arena);
  arena.parallel = ddim_parallel_new (2);
  ddim_attention_forward (k.x, 1, c, hw, &k.p, &arena);
  for (gsize i = 0; i < (gsize) c * hw; i++)
    g_assert_true (isfinite (k.x[i]));
  /* 4 planes of c x hw, and per thread a tile of scores and outputs. */
  gsize bound = 4 * (gsize) c * hw + 2 * (128 * 512 + 128 * c + 64);
  g_test_message ("scratch high-water mark %zu floats (bound %zu)", (size_t) arena.high,
                  (size_t) bound);
  g_assert_cmpuint (arena.high, <=, bound);
  ddim_parallel_free (arena.parallel);
  ddim_arena_clear (&arena);
  case_clear (&k);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/softmax/exp", test_exp);
  g_test_add_func ("/softmax/exp-portable", test_exp_portable);
  g_test_add_func ("/softmax/max", test_max);
  g_test_add_func ("/softmax/rows", test_softmax);
  g_test_add_func ("/attention/small", test_attention_small);
  g_test_add_func ("/attention/remainders", test_attention_remainders);
  g_test_add_func ("/attention/many-tiles", test_attention_many_tiles);
  g_test_add_func ("/attention/memory", test_attention_memory);
  return g_test_run ();
}
