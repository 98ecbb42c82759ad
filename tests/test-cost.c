/* The cost model (cost.h): FLOPs of a tiny config counted by hand, the
 * quadratic growth of attention, and the calibrated time estimate growing
 * with the pixels (kept in the model after the first call). */
#include <math.h>

#include <glib.h>

#include "ddim/config.h"
#include "ddim/cost.h"
#include "ddim/unet.h"

/* Two levels (8 and 16 channels), attention at the second and in the mid
 * block, one resnet per down block. */
static const char tiny_config[] =
  "{ \"_class_name\": \"UNet2DModel\", \"sample_size\": 8, \"in_channels\": 1,"
  "  \"out_channels\": 1, \"block_out_channels\": [8, 16], \"layers_per_block\": 1,"
  "  \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],"
  "  \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],"
  "  \"norm_num_groups\": 4, \"attention_head_dim\": 8, \"add_attention\": true }";

/* Multiply-adds at 8x8, by hand (level 1 is 4x4 = 16 tokens; the time
 * embedding is 8 -> 32 -> 32; a 3x3 conv of ci -> co channels over P
 * pixels is co ci 9 P; attention over T tokens of c channels is 4 c^2 T
 * for the projections plus 2 T^2 c for the scores and outputs). The time
 * embedding MLP and each resnet's projection of it (32 -> its channels)
 * do not depend on the pixels. */
#define TEMB_MACS (8 * 32 + 32 * 32 + 32 * (8 + 16 + 2 * 16 + 2 * 16 + 2 * 8))
#define QUADRATIC_MACS_8 (4 * 2 * 16 * 16 * 16)   /* 4 attention layers */
static double
hand_count_dense_8x8 (void)
{
  double conv_in = 8 * 1 * 9 * 64;
  /* down 0: resnet 8 -> 8 at 64 px (conv1, conv2, time projection), then
   * the stride-2 conv to 16 px */
  double down0 = (8 * 8 * 9 * 64) * 2 + 8 * 8 * 9 * 16;
  /* down 1: resnet 8 -> 16 at 16 px with a 1x1 shortcut, attention */
  double down1 = 16 * 8 * 9 * 16 + 16 * 16 * 9 * 16 + 16 * 8 * 16 + 4 * 16 * 16 * 16;
  /* mid: two resnets 16 -> 16, attention */
  double mid = 2 * (16 * 16 * 9 * 16) * 2 + 4 * 16 * 16 * 16;
  /* up 0 at 16 px: resnets (16 + 16) -> 16 and (16 + 8) -> 16, each with a
   * shortcut and attention; then nearest 2x and a 16 -> 16 conv at 64 px */
  double up0 = (16 * 32 * 9 * 16 + 16 * 16 * 9 * 16 + 16 * 32 * 16)
               + (16 * 24 * 9 * 16 + 16 * 16 * 9 * 16 + 16 * 24 * 16)
               + 2 * (4 * 16 * 16 * 16) + 16 * 16 * 9 * 64;
  /* up 1 at 64 px: resnets (16 + 8) -> 8 and (8 + 8) -> 8 with shortcuts */
  double up1 = (8 * 24 * 9 * 64 + 8 * 8 * 9 * 64 + 8 * 24 * 64)
               + (8 * 16 * 9 * 64 + 8 * 8 * 9 * 64 + 8 * 16 * 64);
  double conv_out = 1 * 8 * 9 * 64;
  return conv_in + down0 + down1 + mid + up0 + up1 + conv_out;
}

static void
test_flops_hand_count (void)
{
  DdimUNetConfig config;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_config_parse (tiny_config, -1, &config, &error));
  g_assert_no_error (error);

  double dense = hand_count_dense_8x8 ();
  double at8 = 2 * (dense + TEMB_MACS + QUADRATIC_MACS_8);
  g_assert_cmpfloat (ddim_unet_forward_flops (&config, 8, 8), ==, at8);
  /* Twice the side: 4x the convolutions, 16x attention's quadratic term. */
  double at16 = 2 * (4 * dense + TEMB_MACS + 16 * QUADRATIC_MACS_8);
  g_assert_cmpfloat (ddim_unet_forward_flops (&config, 16, 16), ==, at16);
  /* Not square: 8 x 16 is twice the pixels (4x the quadratic term). */
  double at8x16 = 2 * (2 * dense + TEMB_MACS + 4 * QUADRATIC_MACS_8);
  g_assert_cmpfloat (ddim_unet_forward_flops (&config, 8, 16), ==, at8x16);
}

static void
test_estimate_scales (void)
{
  DdimUNetConfig config;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_config_parse (tiny_config, -1, &config, &error));
  g_autoptr (DdimUNet) unet = ddim_unet_new_random (&config, 3);

  double e16 = ddim_unet_estimate_forward_seconds (unet, 16, 16);
  g_assert_cmpfloat (e16, >, 0);
  g_assert_true (isfinite (e16));
  /* Calibrated once: later calls cost nothing and agree. */
  gint64 t0 = g_get_monotonic_time ();
  double e16_again = ddim_unet_estimate_forward_seconds (unet, 16, 16);
  g_assert_cmpint (g_get_monotonic_time () - t0, <, 5000);
  g_assert_cmpfloat (e16_again, ==, e16);

  double prev = e16;
  for (int side = 32; side <= 512; side *= 2)
    {
      double e = ddim_unet_estimate_forward_seconds (unet, side, side);
      g_test_message ("%dx%d: estimated %.4g s", side, side, e);
      /* 4x the pixels: at least 4x the time (the convolutions), at most
       * 16x (attention's quadratic term alone). */
      g_assert_cmpfloat (e, >=, 4 * prev * 0.999);
      g_assert_cmpfloat (e, <=, 16 * prev * 1.001);
      prev = e;
    }
  /* At 512x512 the 256x256 tokens of level 1 dominate: nearly 16x. */
  double e256 = ddim_unet_estimate_forward_seconds (unet, 256, 256);
  g_assert_cmpfloat (prev / e256, >, 8);
  g_assert_cmpfloat (ddim_unet_estimate_forward_seconds (unet, 16, 32), >, e16);
}

/* A model without attention: linear in the pixels. */
static void
test_estimate_linear_without_attention (void)
{
  DdimUNetConfig config;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_config_parse (
    "{ \"sample_size\": 8, \"in_channels\": 1, \"out_channels\": 1,"
    "  \"block_out_channels\": [8, 16], \"layers_per_block\": 1,"
    "  \"down_block_types\": [\"DownBlock2D\", \"DownBlock2D\"],"
    "  \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\"],"
    "  \"norm_num_groups\": 4, \"add_attention\": false }", -1, &config, &error));
  g_autoptr (DdimUNet) unet = ddim_unet_new_random (&config, 4);
  double e64 = ddim_unet_estimate_forward_seconds (unet, 64, 64);
  double e128 = ddim_unet_estimate_forward_seconds (unet, 128, 128);
  g_assert_cmpfloat (e64, >, 0);
  /* 4x the pixels, 4x the convolutions; only the time embedding is fixed. */
  g_assert_cmpfloat (e128 / e64, >, 3.9);
  g_assert_cmpfloat (e128 / e64, <, 4.01);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/cost/flops-hand-count", test_flops_hand_count);
  g_test_add_func ("/cost/estimate-scales", test_estimate_scales);
  g_test_add_func ("/cost/estimate-linear-without-attention",
                   test_estimate_linear_without_attention);
  return g_test_run ();
}
