/* Tests of ddim/pixels.h: buffer <-> tensor conversion, luminance, resizing,
 * padding and cropping, detail transfer, mask blending, latent display. */
#include "ddim/pixels.h"

#include <math.h>
#include <string.h>

static float
rnd (guint32 *state)
{
  *state = *state * 1664525u + 1013904223u;
  return (float) (*state >> 8) / (float) (1u << 24);
}

static void
test_luminance (void)
{
  g_assert_cmpfloat_with_epsilon (ddim_pixels_luminance (1, 1, 1), 1.0f, 1e-6);
  g_assert_cmpfloat (ddim_pixels_luminance (0, 0, 0), ==, 0.0f);
  g_assert_cmpfloat_with_epsilon (ddim_pixels_luminance (1, 0, 0), 0.2126f, 1e-7);
  g_assert_cmpfloat_with_epsilon (ddim_pixels_luminance (0, 1, 0), 0.7152f, 1e-7);
  g_assert_cmpfloat_with_epsilon (ddim_pixels_luminance (0, 0, 1), 0.0722f, 1e-7);
  /* Gray stays gray. */
  g_assert_cmpfloat (ddim_pixels_luminance (0.3f, 0.3f, 0.3f), ==, 0.3f);
}

static void
test_rgba_tensor_rgb (void)
{
  const int w = 3, h = 2;
  float rgba[3 * 2 * 4];
  guint32 s = 1;
  for (guint i = 0; i < G_N_ELEMENTS (rgba); i++)
    rgba[i] = rnd (&s);
  float chw[3 * 3 * 2];
  ddim_pixels_rgba_to_tensor (rgba, w, h, 3, chw);
  /* Planar layout, v -> 2v - 1. */
  for (int i = 0; i < w * h; i++)
    for (int c = 0; c < 3; c++)
      g_assert_cmpfloat_with_epsilon (chw[c * w * h + i], 2 * rgba[4 * i + c] - 1, 1e-6);

  float alpha[3 * 2];
  ddim_pixels_rgba_get_alpha (rgba, w, h, alpha);
  for (int i = 0; i < w * h; i++)
    g_assert_cmpfloat (alpha[i], ==, rgba[4 * i + 3]);

  /* Back, with the alpha kept. */
  float back[3 * 2 * 4];
  ddim_pixels_tensor_to_rgba (chw, 3, w, h, alpha, back);
  for (guint i = 0; i < G_N_ELEMENTS (back); i++)
    g_assert_cmpfloat_with_epsilon (back[i], rgba[i], 1e-6);

  /* No alpha: opaque. */
  ddim_pixels_tensor_to_rgba (chw, 3, w, h, NULL, back);
  for (int i = 0; i < w * h; i++)
    g_assert_cmpfloat (back[4 * i + 3], ==, 1.0f);
}

static void
test_rgba_tensor_gray (void)
{
  /* 1 channel: luminance in, replicated out; out-of-range values clamp. */
  const float rgba[] = { 1, 0, 0, 0.5f,   0.2f, 0.2f, 0.2f, 1,   0, 0, 1, 0 };
  float chw[3];
  ddim_pixels_rgba_to_tensor (rgba, 3, 1, 1, chw);
  g_assert_cmpfloat_with_epsilon (chw[0], 2 * 0.2126f - 1, 1e-6);
  g_assert_cmpfloat_with_epsilon (chw[1], 2 * 0.2f - 1, 1e-6);
  g_assert_cmpfloat_with_epsilon (chw[2], 2 * 0.0722f - 1, 1e-6);

  const float t[] = { -1.5f, 0.0f, 2.0f };
  float out[12];
  ddim_pixels_tensor_to_rgba (t, 1, 3, 1, NULL, out);
  for (int c = 0; c < 3; c++)
    {
      g_assert_cmpfloat (out[c], ==, 0.0f);
      g_assert_cmpfloat (out[4 + c], ==, 0.5f);
      g_assert_cmpfloat (out[8 + c], ==, 1.0f);
    }
}

static void
test_resize_identity (void)
{
  const int c = 2, w = 5, h = 4;
  float src[2 * 5 * 4], dst[2 * 5 * 4];
  guint32 s = 7;
  for (guint i = 0; i < G_N_ELEMENTS (src); i++)
    src[i] = rnd (&s);
  ddim_pixels_resize (src, c, w, h, dst, w, h, DDIM_RESIZE_SMOOTH);
  g_assert_cmpmem (src, sizeof src, dst, sizeof dst);
  ddim_pixels_resize (src, c, w, h, dst, w, h, DDIM_RESIZE_NEAREST);
  g_assert_cmpmem (src, sizeof src, dst, sizeof dst);
}

static void
test_resize_down_area (void)
{
  /* 4x2 -> 2x1: each output is the mean of a 2x2 block. */
  const float src[] = { 1, 2, 3, 4,
                        5, 6, 7, 8 };
  float dst[2];
  ddim_pixels_resize (src, 1, 4, 2, dst, 2, 1, DDIM_RESIZE_SMOOTH);
  g_assert_cmpfloat_with_epsilon (dst[0], (1 + 2 + 5 + 6) / 4.0f, 1e-6);
  g_assert_cmpfloat_with_epsilon (dst[1], (3 + 4 + 7 + 8) / 4.0f, 1e-6);

  /* 3 -> 2: fractional overlap, weights 2/3 and 1/3. */
  const float row[] = { 0, 3, 6 };
  float out[2];
  ddim_pixels_resize (row, 1, 3, 1, out, 2, 1, DDIM_RESIZE_SMOOTH);
  g_assert_cmpfloat_with_epsilon (out[0], (0 * 1.0f + 3 * 0.5f) / 1.5f, 1e-5);
  g_assert_cmpfloat_with_epsilon (out[1], (3 * 0.5f + 6 * 1.0f) / 1.5f, 1e-5);

  /* The mean is preserved by area averaging of an integer factor. */
  float big[8 * 8], small[2 * 2];
  guint32 s = 3;
  double mean = 0;
  for (int i = 0; i < 64; i++)
    mean += big[i] = rnd (&s);
  ddim_pixels_resize (big, 1, 8, 8, small, 2, 2, DDIM_RESIZE_SMOOTH);
  g_assert_cmpfloat_with_epsilon ((small[0] + small[1] + small[2] + small[3]) / 4, mean / 64,
                                  1e-5);
}

static void
test_resize_up_linear (void)
{
  /* 2 -> 4: centres at -0.25, 0.25, 0.75, 1.25 source pixels; edges clamp. */
  const float row[] = { 0, 4 };
  float out[4];
  ddim_pixels_resize (row, 1, 2, 1, out, 4, 1, DDIM_RESIZE_SMOOTH);
  g_assert_cmpfloat_with_epsilon (out[0], 0, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[1], 1, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[2], 3, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[3], 4, 1e-6);

  /* A constant stays constant, both ways and mixed (up in x, down in y). */
  float cst[3 * 7 * 5], res[3 * 11 * 2];
  for (guint i = 0; i < G_N_ELEMENTS (cst); i++)
    cst[i] = 0.25f;
  ddim_pixels_resize (cst, 3, 7, 5, res, 11, 2, DDIM_RESIZE_SMOOTH);
  for (guint i = 0; i < G_N_ELEMENTS (res); i++)
    g_assert_cmpfloat_with_epsilon (res[i], 0.25f, 1e-6);
}

static void
test_resize_nearest (void)
{
  const float src[] = { 1, 2,
                        3, 4 };
  float dst[4 * 4];
  ddim_pixels_resize (src, 1, 2, 2, dst, 4, 4, DDIM_RESIZE_NEAREST);
  const float want[] = { 1, 1, 2, 2,
                         1, 1, 2, 2,
                         3, 3, 4, 4,
                         3, 3, 4, 4 };
  g_assert_cmpmem (dst, sizeof dst, want, sizeof want);
}

static void
test_pad_crop (void)
{
  int pw, ph;
  ddim_pixels_round_up_size (28, 30, 4, &pw, &ph);
  g_assert_cmpint (pw, ==, 28);
  g_assert_cmpint (ph, ==, 32);
  ddim_pixels_round_up_size (1, 5, 8, &pw, &ph);
  g_assert_cmpint (pw, ==, 8);
  g_assert_cmpint (ph, ==, 8);

  const float src[] = { 1, 2,
                        3, 4,   /* channel 0 */
                        5, 6,
                        7, 8 }; /* channel 1 */
  float padded[2 * 3 * 3];
  ddim_pixels_pad (src, 2, 2, 2, padded, 3, 3);
  const float want[] = { 1, 2, 2,  3, 4, 4,  3, 4, 4,
                         5, 6, 6,  7, 8, 8,  7, 8, 8 };
  g_assert_cmpmem (padded, sizeof padded, want, sizeof want);
  float back[8];
  ddim_pixels_crop (padded, 2, 3, 3, back, 2, 2);
  g_assert_cmpmem (back, sizeof back, src, sizeof src);
}

static void
test_detail_transfer (void)
{
  const int c = 1, W = 8, H = 6, w = 4, h = 3;
  float original[8 * 6], edited[4 * 3], reference[4 * 3], out[8 * 6];
  guint32 s = 11;
  for (int i = 0; i < W * H; i++)
    original[i] = rnd (&s) - 0.5f;
  for (int i = 0; i < w * h; i++)
    reference[i] = edited[i] = rnd (&s) - 0.5f;

  /* No edit: the original comes back exactly, detail included. */
  ddim_pixels_detail_transfer (original, c, W, H, edited, reference, w, h, out);
  g_assert_cmpmem (out, sizeof out, original, sizeof original);

  /* A constant edit moves every pixel by that constant. */
  for (int i = 0; i < w * h; i++)
    edited[i] = reference[i] + 0.125f;
  ddim_pixels_detail_transfer (original, c, W, H, edited, reference, w, h, out);
  for (int i = 0; i < W * H; i++)
    g_assert_cmpfloat_with_epsilon (out[i], original[i] + 0.125f, 1e-6);

  /* Clamped to [-1, 1]; in place works. */
  for (int i = 0; i < w * h; i++)
    edited[i] = reference[i] + 5;
  memcpy (out, original, sizeof out);
  ddim_pixels_detail_transfer (out, c, W, H, edited, reference, w, h, out);
  for (int i = 0; i < W * H; i++)
    g_assert_cmpfloat (out[i], ==, 1.0f);
}

static void
test_blend_mask (void)
{
  const int w = 4, h = 1;
  float result[] = { 1, 1, 1, 1,   -1, -1, -1, -1 };
  const float base[] = { 0, 0, 0, 0,   0, 0, 0, 0 };
  const float mask[] = { 0, 0.25f, 1, 2 };
  ddim_pixels_blend_mask (result, base, mask, 2, w, h);
  const float want[] = { 0, 0.25f, 1, 1,   0, -0.25f, -1, -1 };
  for (int i = 0; i < 8; i++)
    g_assert_cmpfloat_with_epsilon (result[i], want[i], 1e-6);

  /* No mask: unchanged. */
  float keep[] = { 0.5f, 0.5f, 0.5f, 0.5f };
  ddim_pixels_blend_mask (keep, base, NULL, 1, w, h);
  g_assert_cmpfloat (keep[0], ==, 0.5f);

  float alpha[] = { 1, 0.5f, 1, 0 };
  ddim_pixels_apply_mask (alpha, mask, w, h);
  const float want_alpha[] = { 0, 0.125f, 1, 0 };
  g_assert_cmpmem (alpha, sizeof alpha, want_alpha, sizeof want_alpha);
}

static void
test_latent_display (void)
{
  const float latent[] = { 0, 3, -3, 6, -0.3f };
  float out[5];
  ddim_pixels_latent_to_display (latent, 5, out);
  g_assert_cmpfloat (out[0], ==, 0);
  g_assert_cmpfloat (out[1], ==, 1);
  g_assert_cmpfloat (out[2], ==, -1);
  g_assert_cmpfloat (out[3], ==, 1);
  g_assert_cmpfloat_with_epsilon (out[4], -0.1f, 1e-7);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/pixels/luminance", test_luminance);
  g_test_add_func ("/pixels/rgba-tensor-rgb", test_rgba_tensor_rgb);
  g_test_add_func ("/pixels/rgba-tensor-gray", test_rgba_tensor_gray);
  g_test_add_func ("/pixels/resize-identity", test_resize_identity);
  g_test_add_func ("/pixels/resize-down-area", test_resize_down_area);
  g_test_add_func ("/pixels/resize-up-linear", test_resize_up_linear);
  g_test_add_func ("/pixels/resize-nearest", test_resize_nearest);
  g_test_add_func ("/pixels/pad-crop", test_pad_crop);
  g_test_add_func ("/pixels/detail-transfer", test_detail_transfer);
  g_test_add_func ("/pixels/blend-mask", test_blend_mask);
  g_test_add_func ("/pixels/latent-display", test_latent_display);
  return g_test_run ();
}
