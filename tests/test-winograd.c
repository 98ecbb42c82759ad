/* Winograd convolution against im2col and a double-precision direct
 * convolution: layer by layer (odd sizes, batches, channel counts that are
 * not multiples of anything, 1 and 2 threads, accumulate and bias modes)
 * and over whole UNet forwards with random weights.
 * Error measure: max |y - y_ref| / max |y_ref|. */
#include <math.h>
#include <string.h>

#include <glib.h>

#include "ddim/config.h"
#include "ddim/unet.h"
#include "model/unet-private.h"
#include "ops/ops.h"
#include "ops/packed-gemm.h"
#include "ops/parallel.h"
#include "ops/winograd.h"

#define LAYER_TOL 1e-5
#define MODEL_TOL 1e-4

static void
fill (GRand *r, float *p, gsize n, double lo, double hi)
{
  for (gsize i = 0; i < n; i++)
    p[i] = (float) g_rand_double_range (r, lo, hi);
}

static double
rel_max_err (const float *y, const float *ref, gsize n)
{
  double err = 0, mx = 0;
  for (gsize i = 0; i < n; i++)
    {
      err = MAX (err, fabs ((double) y[i] - ref[i]));
      mx = MAX (mx, fabs ((double) ref[i]));
    }
  g_assert_cmpfloat (mx, >, 0);
  return err / mx;
}

/* conv3x3, padding 1, in double. */
static void
direct_conv (const float *x, int n, int cin, int h, int w, const float *wt, const float *bias,
             int cout, float *y)
{
  for (int b = 0; b < n; b++)
    for (int co = 0; co < cout; co++)
      for (int oy = 0; oy < h; oy++)
        for (int ox = 0; ox < w; ox++)
          {
            double s = bias ? bias[co] : 0;
            for (int ci = 0; ci < cin; ci++)
              for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++)
                  {
                    int iy = oy - 1 + ky, ix = ox - 1 + kx;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                      continue;
                    s += (double) x[(((gsize) b * cin + ci) * h + iy) * w + ix]
                         * wt[(((gsize) co * cin + ci) * 3 + ky) * 3 + kx];
                  }
            y[(((gsize) b * cout + co) * h + oy) * w + ox] = (float) s;
          }
}

typedef struct {
  int n, cin, cout, h, w, m;
} Shape;

static void
check_layer (const Shape *s, int threads)
{
  GRand *r = g_rand_new_with_seed (s->n * 1000 + s->cin * 7 + s->h);
  gsize nx = (gsize) s->n * s->cin * s->h * s->w, ny = (gsize) s->n * s->cout * s->h * s->w;
  gsize nw = (gsize) s->cout * s->cin * 9;
  float *x = g_new (float, nx), *wt = g_new (float, nw), *bias = g_new (float, s->cout);
  float *y = g_new (float, ny), *ref = g_new (float, ny), *col = g_new (float, ny);
  float *init = g_new (float, ny);
  /* Inputs like GroupNorm + SiLU outputs, weights ~ 1/sqrt(fan_in). */
  fill (r, x, nx, -0.3, 2.0);
  double a = 1.7 / sqrt (9.0 * s->cin);
  fill (r, wt, nw, -a, a);
  fill (r, bias, s->cout, -0.5, 0.5);
  fill (r, init, ny, -1, 1);

  DdimArena arena;
  ddim_arena_init (&arena);
  DdimParallel *par = ddim_parallel_new (threads);
  arena.parallel = par;

  direct_conv (x, s->n, s->cin, s->h, s->w, wt, bias, s->cout, ref);

  /* With bias. */
  ddim_winograd_conv3x3 (x, s->n, s->cin, s->h, s->w, wt, bias, s->cout, y, FALSE, s->m, &arena);
  double e_direct = rel_max_err (y, ref, ny);
  arena.im2col_only = TRUE;
  ddim_conv2d_forward (x, s->n, s->cin, s->h, s->w, wt, bias, s->cout, 3, 1, 1, 1, col, &arena);
  arena.im2col_only = FALSE;
  double e_im2col = rel_max_err (y, col, ny);
  g_test_message ("F(%d,3) n=%d %d->%d %dx%d, %d thread(s): vs double %.2e, vs im2col %.2e",
                  s->m, s->n, s->cin, s->cout, s->h, s->w, threads, e_direct, e_im2col);
  g_assert_cmpfloat (e_direct, <=, LAYER_TOL);
  g_assert_cmpfloat (e_im2col, <=, LAYER_TOL);

  /* Accumulating onto given values (bias folded in by the caller). */
  memcpy (y, init, ny * sizeof (float));
  ddim_winograd_conv3x3 (x, s->n, s->cin, s->h, s->w, wt, NULL, s->cout, y, TRUE, s->m, &arena);
  for (gsize i = 0; i < ny; i++)
    ref[i] += init[i] - bias[(i / ((gsize) s->h * s->w)) % s->cout];
  g_assert_cmpfloat (rel_max_err (y, ref, ny), <=, LAYER_TOL);

  /* No bias: every output written (garbage before). */
  for (gsize i = 0; i < ny; i++)
    y[i] = NAN;
  ddim_winograd_conv3x3 (x, s->n, s->cin, s->h, s->w, wt, NULL, s->cout, y, FALSE, s->m, &arena);
  for (gsize i = 0; i < ny; i++)
    ref[i] -= init[i];
  g_assert_cmpfloat (rel_max_err (y, ref, ny), <=, LAYER_TOL);

  ddim_parallel_free (par);
  ddim_arena_clear (&arena);
  g_free (x);
  g_free (wt);
  g_free (bias);
  g_free (y);
  g_free (ref);
  g_free (col);
  g_free (init);
  g_rand_free (r);
}

static const Shape shapes[] = {
  { 1, 16, 24, 32, 32, 4 },
  { 1, 33, 17, 37, 35, 4 },   /* odd sizes: partial tiles on both edges */
  { 3, 19, 21, 17, 23, 2 },   /* batch, F(2,3) with partial tiles */
  { 2, 40, 16, 34, 32, 4 },
  { 2, 24, 48, 16, 16, 2 },
  { 1, 8, 5, 7, 9, 4 },       /* smaller than one chunk row of anything */
  { 4, 20, 20, 5, 6, 2 },
  { 1, 24, 110, 36, 33, 4 },  /* several blocks of output channels, a partial last one */
  { 2, 16, 250, 17, 16, 2 },
};

/* The packed GEMM, both register blocks, against a double product: sizes
 * that are not multiples of the panels, k = 0, and every padded row and
 * column written. */
static void
test_packed_gemm (void)
{
  static const int sizes[][3] = { { 12, 32, 64 }, { 25, 70, 9 }, { 1, 1, 1 }, { 13, 33, 0 },
                                  { 40, 5, 300 } };
  GRand *r = g_rand_new_with_seed (7);
  for (guint si = 0; si < G_N_ELEMENTS (sizes); si++)
    for (int portable = 0; portable <= 1; portable++)
      {
        int m = sizes[si][0], n = sizes[si][1], k = sizes[si][2];
        int mp = (int) ddim_packed_round (m, DDIM_PACKED_MR);
        int np = (int) ddim_packed_round (n, DDIM_PACKED_NR);
        gsize ldc = np + 3;
        float *a = g_new0 (float, (gsize) mp * MAX (k, 1)), *b = g_new0 (float, (gsize) np * MAX (k, 1));
        float *ad = g_new (float, (gsize) m * MAX (k, 1)), *bd = g_new (float, (gsize) n * MAX (k, 1));
        float *c = g_new (float, (gsize) mp * ldc);
        fill (r, ad, (gsize) m * k, -1, 1);
        fill (r, bd, (gsize) n * k, -1, 1);
        for (int i = 0; i < m; i++)
          for (int p = 0; p < k; p++)
            a[ddim_packed_a_index (i, p, k)] = ad[(gsize) i * k + p];
        for (int p = 0; p < k; p++)
          for (int jj = 0; jj < n; jj++)
            b[ddim_packed_b_index (p, jj, k)] = bd[(gsize) p * n + jj];
        for (gsize i = 0; i < (gsize) mp * ldc; i++)
          c[i] = NAN;
        (portable ? ddim_packed_gemm_portable : ddim_packed_gemm) (m, n, k, a, b, c, ldc);
        for (int i = 0; i < mp; i++)
          for (int jj = 0; jj < np; jj++)
            {
              double ref = 0;
              for (int p = 0; p < k && i < m && jj < n; p++)
                ref += (double) ad[(gsize) i * k + p] * bd[(gsize) p * n + jj];
              g_assert_cmpfloat (fabs (c[(gsize) i * ldc + jj] - ref), <=, 1e-5 * (1 + k));
            }
        g_free (a);
        g_free (b);
        g_free (ad);
        g_free (bd);
        g_free (c);
      }
  g_rand_free (r);
}

static void
test_layers (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (shapes); i++)
    for (int threads = 1; threads <= 2; threads++)
      check_layer (&shapes[i], threads);
}

/* Several chunks of tile rows, split across images: the chunk size comes
 * from the channel count, so many channels on a tall image give chunks of
 * a few tile rows that straddle the batch boundary. */
static void
test_chunks (void)
{
  Shape s = { 2, 120, 16, 40, 200, 4 };
  check_layer (&s, 2);
  Shape s2 = { 3, 300, 16, 40, 18, 2 };
  check_layer (&s2, 1);
}

/* The dispatch: ddim_conv2d_forward uses Winograd at >= 16 x 16 and im2col
 * below; both give the same result within the tolerance. */
static void
test_dispatch (void)
{
  g_assert_cmpint (ddim_winograd_tile_for (256, 256), ==, 4);
  g_assert_cmpint (ddim_winograd_tile_for (32, 64), ==, 4);
  g_assert_cmpint (ddim_winograd_tile_for (16, 16), ==, 2);
  g_assert_cmpint (ddim_winograd_tile_for (31, 40), ==, 2);
  g_assert_cmpint (ddim_winograd_tile_for (8, 8), ==, 0);
  g_assert_cmpint (ddim_winograd_tile_for (64, 15), ==, 0);
}

static const char config_json[] =
  "{\"_class_name\": \"UNet2DModel\", \"act_fn\": \"silu\", \"attention_head_dim\": null,"
  " \"center_input_sample\": false, \"downsample_padding\": 0, \"flip_sin_to_cos\": false,"
  " \"freq_shift\": 1, \"in_channels\": 3, \"out_channels\": 3, \"layers_per_block\": 1,"
  " \"mid_block_scale_factor\": 1, \"norm_eps\": 1e-06, \"norm_num_groups\": 16,"
  " \"time_embedding_type\": \"positional\", \"resnet_time_scale_shift\": \"default\","
  " \"add_attention\": true, \"sample_size\": 32, \"block_out_channels\": [32, 48, 64, 64],"
  " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\", \"DownBlock2D\","
  " \"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\", \"AttnUpBlock2D\","
  " \"UpBlock2D\"]}";

static void
forward (DdimUNet *u, gboolean im2col_only, const float *x, int n, int size, const float *t,
         float *out)
{
  g_autoptr (GError) error = NULL;
  u->arena.im2col_only = im2col_only;
  g_assert_true (ddim_unet_forward (u, x, n, size, size, t, out, &error));
  g_assert_no_error (error);
  u->arena.im2col_only = FALSE;
}

static void
check_model (int size, int n)
{
  g_autoptr (GError) error = NULL;
  DdimUNetConfig config;
  g_assert_true (ddim_unet_config_parse (config_json, -1, &config, &error));
  DdimUNet *u = ddim_unet_new_random (&config, 5);
  gsize nx = (gsize) n * 3 * size * size;
  float *x = g_new (float, nx), *a = g_new (float, nx), *b = g_new (float, nx);
  float t[2] = { 500.f, 37.f };
  GRand *r = g_rand_new_with_seed (size);
  fill (r, x, nx, -1, 1);

  forward (u, FALSE, x, n, size, t, a);
  forward (u, TRUE, x, n, size, t, b);
  double e = rel_max_err (a, b, nx);
  g_test_message ("forward %dx%d batch %d: Winograd vs im2col %.2e", size, size, n, e);
  g_assert_cmpfloat (e, <=, MODEL_TOL);
  g_assert_cmpfloat (e, >, 0);   /* Winograd did run */

  /* Changed weights are used at once (nothing cached from before). */
  gsize count;
  float *w = ddim_unet_lookup_tensor (u, "down_blocks.0.resnets.0.conv1.weight", &count);
  g_assert_nonnull (w);
  for (gsize i = 0; i < count; i++)
    w[i] *= -1.5f;
  forward (u, FALSE, x, n, size, t, a);
  g_assert_cmpfloat (rel_max_err (a, b, nx), >, 1e-2);
  forward (u, TRUE, x, n, size, t, b);
  g_assert_cmpfloat (rel_max_err (a, b, nx), <=, MODEL_TOL);

  ddim_unet_free (u);
  g_free (x);
  g_free (a);
  g_free (b);
  g_rand_free (r);
}

static void
test_model_32 (void)
{
  check_model (32, 1);
}

static void
test_model_64 (void)
{
  check_model (64, 2);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/winograd/dispatch", test_dispatch);
  g_test_add_func ("/winograd/packed-gemm", test_packed_gemm);
  g_test_add_func ("/winograd/layers", test_layers);
  g_test_add_func ("/winograd/chunks", test_chunks);
  g_test_add_func ("/winograd/model-32", test_model_32);
  g_test_add_func ("/winograd/model-64", test_model_64);
  return g_test_run ();
}
