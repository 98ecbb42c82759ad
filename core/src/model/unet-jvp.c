/* Forward-mode differentiation of the UNet's encoder half: J v for
 * J = dh/dx, h the mid-block output. The primal pass runs the encoder with
 * the tape (the inputs of every layer are kept), then the tangent walks the
 * same layers in the same order. Skips do not reach h, so only the main
 * path's tangent is carried; the time embedding does not depend on x, so
 * its tangent is zero and every time term drops out.
 *
 * The unsupervised directions (Park et al., NeurIPS 2023) need J v next to
 * J^T u (ddim_unet_hspace_vjp): a JVP costs about one encoder forward,
 * where differencing two forwards would lose half the float32 digits. */
#include <string.h>

#include "ddim/error.h"
#include "model/unet-private.h"

typedef struct {
  DdimUNet     *u;
  DdimUNetTape *tape;
  DdimArena    *A;   /* scratch, released by each layer */
  DdimArena    *G;   /* tangents that outlive a layer */
  int           n;
} Tangent;

/* Tangent of one ResnetBlock2D at its saved primal @s: @dx in, @dout out. */
static void
resnet_jvp (Tangent *f, const DdimResnetLayer *r, const DdimUnitSave *s, int h, int w,
            const float *dx, float *dout)
{
  ddim_resnet_jvp (f->u, r, s, f->n, h, w, dx, dout, f->A);
}

static void
attention_jvp (Tangent *f, const DdimAttentionLayer *a, const float *x_in, int hw, float *d)
{
  DdimAttentionParams p;
  ddim_unet_attention_params (f->u, a, &p);
  ddim_attention_jvp (x_in, d, f->n, a->channels, hw, &p, d, f->A);
}

gboolean
ddim_unet_hspace_jvp (DdimUNet *u, const float *x, int n, int height, int width, const float *t,
                      const float *v, float *hspace, float *jv, GError **error)
{
  g_return_val_if_fail (u && x && t && v && jv && n > 0, FALSE);
  if (!ddim_unet_check_size (u, height, width, error))
    return FALSE;
  const DdimUNetConfig *c = &u->config;
  DdimUNetTape *tape = ddim_unet_get_tape (u);
  ddim_unet_run_encoder (u, x, n, height, width, t, hspace, tape);

  Tangent f = { u, tape, &u->arena, &u->grad_arena, n };
  ddim_arena_reset (f.A);
  ddim_arena_reset (f.G);
  int L = c->n_levels, ch0 = c->block_out_channels[0];
  int h = height, w = width;

  const float *d_in = v;
  if (c->center_input_sample)
    {
      /* x -> 2x - 1 doubles the tangent. */
      gsize cnt = (gsize) n * c->in_channels * h * w;
      float *d2 = ddim_arena_alloc (f.G, cnt);
      for (gsize i = 0; i < cnt; i++)
        d2[i] = 2.f * v[i];
      d_in = d2;
    }
  float *d_cur = ddim_arena_alloc (f.G, (gsize) n * ch0 * h * w);
  ddim_conv2d_jvp (d_in, n, c->in_channels, h, w, u->conv_in.w, ch0, 3, 1, 1, 1, d_cur, f.A);

  for (int i = 0; i < L; i++)
    {
      const DdimBlock *blk = &u->down[i];
      for (int j = 0; j < blk->n_resnets; j++)
        {
          const DdimUnitSave *s = &tape->down[i][j];
          float *d_next = ddim_arena_alloc (f.G, (gsize) n * blk->channels * h * w);
          resnet_jvp (&f, &blk->resnets[j], s, h, w, d_cur, d_next);
          if (blk->has_attention)
            attention_jvp (&f, &blk->attentions[j], s->attn_in, h * w, d_next);
          d_cur = d_next;
        }
      if (blk->has_resample)
        {
          int oh, ow;
          ddim_resampler_out_size (u, blk, TRUE, h, w, &oh, &ow);
          float *d_next = ddim_arena_alloc (f.G, (gsize) n * blk->channels * oh * ow);
          ddim_resampler_jvp (u, blk, TRUE, &tape->down_resampler[i], n, h, w, d_cur, d_next, f.A);
          d_cur = d_next;
          h = oh;
          w = ow;
        }
    }

  int cm = c->block_out_channels[L - 1];
  gsize hcount = (gsize) n * cm * h * w;
  float *d_m = ddim_arena_alloc (f.G, hcount);
  resnet_jvp (&f, &u->mid_resnets[0], &tape->mid[0], h, w, d_cur, d_m);
  if (u->mid_has_attention)
    attention_jvp (&f, &u->mid_attention, tape->mid[0].attn_in, h * w, d_m);
  resnet_jvp (&f, &u->mid_resnets[1], &tape->mid[1], h, w, d_m, jv);
  ddim_arena_release (f.A, 0);
  ddim_arena_release (f.G, 0);
  return TRUE;
}
