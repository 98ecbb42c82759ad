/* What a forward pass costs (cost.h).
 *
 * FLOPs: twice the multiply-adds of ddim_unet_count_macs, which walks the
 * same structure as the forward. Time: two rates, because attention's
 * score matrix costs more per FLOP than the convolutions (an exponential
 * per score besides the two thin GEMMs) and grows with the square of the
 * pixels while everything else grows linearly:
 *   seconds = dense_rate * (FLOPs - quadratic FLOPs) + attention_rate * quadratic FLOPs
 * The dense rate comes from timing a whole forward at a small size, the
 * attention rate from timing one of the model's attention layers alone at
 * ATTN_CAL_TOKENS tokens. */
#include <math.h>

#include "ddim/cost.h"
#include "model/unet-private.h"
#include "ops/ops.h"

/* FLOPs of the calibrating forward pass: large enough that the GEMMs run
 * near their usual speed, small enough to take a fraction of a second. */
#define CAL_FORWARD_FLOPS 1.5e9
#define CAL_MAX_SIZE 128
#define ATTN_CAL_TOKENS 1024

/* Multiply-adds of the score and output products of all attention layers
 * (QK^T and PV: 2 tokens^2 channels each), the part that grows with the
 * square of the pixels. Level i has (h / 2^i) x (w / 2^i) tokens. */
static double
attention_quadratic_macs (DdimUNet *u, int height, int width)
{
  const DdimUNetConfig *c = &u->config;
  int L = c->n_levels;
  double m = 0;
  for (int i = 0; i < L; i++)
    {
      double tokens = (double) (height >> i) * (width >> i);
      const DdimBlock *down = &u->down[i];
      if (down->has_attention)
        for (int j = 0; j < down->n_resnets; j++)
          m += 2.0 * tokens * tokens * down->attentions[j].channels;
      /* Up block i runs at level L - 1 - i. */
      const DdimBlock *up = &u->up[L - 1 - i];
      if (up->has_attention)
        for (int j = 0; j < up->n_resnets; j++)
          m += 2.0 * tokens * tokens * up->attentions[j].channels;
    }
  if (u->mid_has_attention)
    {
      double tokens = (double) (height >> (L - 1)) * (width >> (L - 1));
      m += 2.0 * tokens * tokens * u->mid_attention.channels;
    }
  return m;
}

double
ddim_unet_forward_flops (const DdimUNetConfig *config, int height, int width)
{
  g_return_val_if_fail (config != NULL && height > 0 && width > 0, -1);
  /* The layer structure without weights (zeroed parameters are never
   * touched, so their pages are not even mapped in). */
  g_autoptr (DdimUNet) u = ddim_unet_alloc (config);
  return 2.0 * ddim_unet_count_macs (u, 1, height, width);
}

/* The first attention layer of the model (deepest down block first, where
 * the attention of the usual configs sits), or NULL. */
static const DdimAttentionLayer *
some_attention (DdimUNet *u)
{
  if (u->mid_has_attention)
    return &u->mid_attention;
  for (int i = 0; i < u->config.n_levels; i++)
    {
      if (u->down[i].has_attention && u->down[i].n_resnets > 0)
        return &u->down[i].attentions[0];
      if (u->up[i].has_attention && u->up[i].n_resnets > 0)
        return &u->up[i].attentions[0];
    }
  return NULL;
}

static double
seconds_since (gint64 t0)
{
  return (g_get_monotonic_time () - t0) / 1e6;
}

/* Times a forward at a small size (after a warm-up call at that size). */
static double
calibrate_dense_rate (DdimUNet *u)
{
  const DdimUNetConfig *c = &u->config;
  int f = ddim_unet_config_size_factor (c);
  int size = f;
  while (size + f <= MAX (CAL_MAX_SIZE, f)
         && 2.0 * ddim_unet_count_macs (u, 1, size + f, size + f) <= CAL_FORWARD_FLOPS)
    size += f;

  gsize n_in = (gsize) c->in_channels * size * size;
  gsize n_out = (gsize) c->out_channels * size * size;
  g_autofree float *x = g_new (float, n_in);
  g_autofree float *out = g_new (float, n_out);
  for (gsize i = 0; i < n_in; i++)
    x[i] = (float) sin (0.37 * (double) i);
  float t = 500.f;
  double best = G_MAXDOUBLE;
  for (int r = 0; r < 3; r++)
    {
      gint64 t0 = g_get_monotonic_time ();
      if (!ddim_unet_forward (u, x, 1, size, size, &t, out, NULL))
        return -1;
      if (r > 0)
        best = MIN (best, seconds_since (t0));
    }
  double flops = 2.0 * ddim_unet_count_macs (u, 1, size, size);
  return best / flops;
}

/* Times one attention layer alone at ATTN_CAL_TOKENS tokens; the part of
 * that time its projections account for at @dense_rate is taken out. */
static double
calibrate_attention_rate (DdimUNet *u, double dense_rate)
{
  const DdimAttentionLayer *a = some_attention (u);
  if (a == NULL)
    return dense_rate;
  DdimAttentionParams p;
  ddim_unet_attention_params (u, a, &p);
  int hw = ATTN_CAL_TOKENS, ch = a->channels;
  gsize count = (gsize) ch * hw;
  g_autofree float *x = g_new (float, count);
  double best = G_MAXDOUBLE;
  for (int r = 0; r < 3; r++)
    {
      for (gsize i = 0; i < count; i++)
        x[i] = (float) sin (0.61 * (double) i);
      gint64 t0 = g_get_monotonic_time ();
      ddim_attention_forward (x, 1, ch, hw, &p, &u->arena);
      if (r > 0)
        best = MIN (best, seconds_since (t0));
      ddim_arena_reset (&u->arena);
    }
  double quadratic = 4.0 * (double) hw * hw * ch;
  double projections = 8.0 * (double) ch * ch * hw;
  double rest = best - dense_rate * projections;
  /* Never below the dense rate: noise must not make attention look free. */
  return MAX (rest / quadratic, dense_rate);
}

double
ddim_unet_estimate_forward_seconds (DdimUNet *unet, int height, int width)
{
  g_return_val_if_fail (unet != NULL && height > 0 && width > 0, -1);
  int threads = ddim_parallel_get_n_threads (unet->parallel);
  if (unet->cost_dense_rate <= 0 || unet->cost_threads != threads)
    {
      double dense = calibrate_dense_rate (unet);
      if (!(dense > 0))
        return -1;
      unet->cost_attention_rate = calibrate_attention_rate (unet, dense);
      unet->cost_dense_rate = dense;
      unet->cost_threads = threads;
    }
  double total = 2.0 * ddim_unet_count_macs (unet, 1, height, width);
  double quadratic = 2.0 * attention_quadratic_macs (unet, height, width);
  return unet->cost_dense_rate * (total - quadratic) + unet->cost_attention_rate * quadratic;
}
