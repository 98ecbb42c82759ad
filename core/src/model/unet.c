/* UNet2DModel forward pass (diffusers' layout and skip order).
 *
 * Memory: every activation comes from the model's arena in LIFO order. The
 * down pass leaves its skips stacked; each up-block layer pops the top skip,
 * computes on top of the stack and moves its result down into the popped
 * skip's place, so the stack never holds more than the skips plus one
 * layer's working set. */
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "model/unet-private.h"

typedef struct {
  float *data;
  gsize  mark;       /* arena offset where it starts */
  int    channels;
  int    height, width;
} Activation;

/* One ResnetBlock2D. Allocates its output on top of the arena and returns it;
 * @temb_act is SiLU(time embedding) [n, temb]. */
static float *
resnet_forward (DdimUNet *u, const DdimResnetLayer *r, const float *x, int n, int h, int w,
                const float *temb_act, DdimArena *A)
{
  const DdimUNetConfig *c = &u->config;
  gsize hw = (gsize) h * w;
  float eps = (float) c->norm_eps;
  float *out = ddim_arena_alloc (A, (gsize) n * r->cout * hw);
  gsize mark = ddim_arena_mark (A);
  float *t1 = ddim_arena_alloc (A, (gsize) n * MAX (r->cin, r->cout) * hw);
  float *h1 = ddim_arena_alloc (A, (gsize) n * r->cout * hw);
  float *tp = ddim_arena_alloc (A, (gsize) n * r->temb_proj.out);

  ddim_group_norm_forward (x, n, r->cin, (int) hw, r->norm1.groups, eps, r->norm1.gamma,
                           r->norm1.beta, TRUE, t1);
  ddim_conv2d_forward (t1, n, r->cin, h, w, r->conv1.w, r->conv1.b, r->cout, 3, 1, 1, 1, h1, A);
  ddim_linear_forward (temb_act, n, r->temb_proj.in, r->temb_proj.w, r->temb_proj.b,
                       r->temb_proj.out, tp);
  if (!c->scale_shift)
    {
      for (int b = 0; b < n; b++)
        for (int ch = 0; ch < r->cout; ch++)
          {
            float v = tp[(gsize) b * r->cout + ch];
            float *p = h1 + ((gsize) b * r->cout + ch) * hw;
            for (gsize i = 0; i < hw; i++)
              p[i] += v;
          }
      ddim_group_norm_forward (h1, n, r->cout, (int) hw, r->norm2.groups, eps, r->norm2.gamma,
                               r->norm2.beta, TRUE, t1);
    }
  else
    {
      ddim_group_norm_forward (h1, n, r->cout, (int) hw, r->norm2.groups, eps, r->norm2.gamma,
                               r->norm2.beta, FALSE, t1);
      for (int b = 0; b < n; b++)
        for (int ch = 0; ch < r->cout; ch++)
          {
            float scale = tp[(gsize) b * 2 * r->cout + ch];
            float shift = tp[(gsize) b * 2 * r->cout + r->cout + ch];
            float *p = t1 + ((gsize) b * r->cout + ch) * hw;
            for (gsize i = 0; i < hw; i++)
              p[i] = p[i] * (1.f + scale) + shift;
          }
      ddim_silu_forward (t1, (gsize) n * r->cout * hw);
    }
  ddim_conv2d_forward (t1, n, r->cout, h, w, r->conv2.w, r->conv2.b, r->cout, 3, 1, 1, 1, out, A);

  const float *shortcut = x;
  if (r->shortcut.w)
    {
      ddim_conv2d_forward (x, n, r->cin, h, w, r->shortcut.w, r->shortcut.b, r->cout, 1, 1, 0, 0,
                           h1, A);
      shortcut = h1;
    }
  gsize total = (gsize) n * r->cout * hw;
  if (r->output_scale == 1.f)
    for (gsize i = 0; i < total; i++)
      out[i] += shortcut[i];
  else
    for (gsize i = 0; i < total; i++)
      out[i] = (out[i] + shortcut[i]) / r->output_scale;
  ddim_arena_release (A, mark);
  return out;
}

static void
attention_forward (DdimUNet *u, const DdimAttentionLayer *a, float *x, int n, int hw, DdimArena *A)
{
  DdimAttentionParams p = {
    .gn_gamma = a->has_norm ? a->norm.gamma : NULL,
    .gn_beta = a->has_norm ? a->norm.beta : NULL,
    .gn_groups = a->has_norm ? a->norm.groups : 0,
    .gn_eps = (float) u->config.norm_eps,
    .q_w = a->q.w, .q_b = a->q.b, .k_w = a->k.w, .k_b = a->k.b,
    .v_w = a->v.w, .v_b = a->v.b, .o_w = a->o.w, .o_b = a->o.b,
    .heads = a->heads,
    .rescale = 1.f,
  };
  ddim_attention_forward (x, n, a->channels, hw, &p, A);
}

gboolean
ddim_unet_check_size (DdimUNet *unet, int height, int width, GError **error)
{
  int f = ddim_unet_config_size_factor (&unet->config);
  if (height <= 0 || width <= 0 || height % f != 0 || width % f != 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "image size %dx%d is not supported by this model: width and height "
                   "must be positive multiples of %d", width, height, f);
      return FALSE;
    }
  return TRUE;
}

gboolean
ddim_unet_forward (DdimUNet *u, const float *x, int n, int height, int width,
                   const float *t, float *out, GError **error)
{
  g_return_val_if_fail (u != NULL && x != NULL && t != NULL && out != NULL && n > 0, FALSE);
  if (!ddim_unet_check_size (u, height, width, error))
    return FALSE;

  const DdimUNetConfig *c = &u->config;
  DdimArena *A = &u->arena;
  int L = c->n_levels;
  int temb_dim = ddim_unet_config_temb_dim (c);
  int ch0 = c->block_out_channels[0];
  ddim_arena_reset (A);

  /* Time embedding, and its SiLU that every resnet projects. */
  float *emb = ddim_arena_alloc (A, (gsize) n * ch0);
  float *t1 = ddim_arena_alloc (A, (gsize) n * temb_dim);
  float *temb_act = ddim_arena_alloc (A, (gsize) n * temb_dim);
  ddim_timestep_embedding_forward (t, n, ch0, c->flip_sin_to_cos, (float) c->freq_shift, emb);
  ddim_linear_forward (emb, n, ch0, u->temb1.w, u->temb1.b, temb_dim, t1);
  ddim_silu_forward (t1, (gsize) n * temb_dim);
  ddim_linear_forward (t1, n, temb_dim, u->temb2.w, u->temb2.b, temb_dim, temb_act);
  ddim_silu_forward (temb_act, (gsize) n * temb_dim);

  const float *input = x;
  if (c->center_input_sample)
    {
      gsize cnt = (gsize) n * c->in_channels * height * width;
      float *centred = ddim_arena_alloc (A, cnt);
      for (gsize i = 0; i < cnt; i++)
        centred[i] = 2.f * x[i] - 1.f;
      input = centred;
    }

  GArray *skips = g_array_sized_new (FALSE, FALSE, sizeof (Activation), 64);
  int h = height, w = width;
  Activation cur = { NULL, ddim_arena_mark (A), ch0, h, w };
  cur.data = ddim_arena_alloc (A, (gsize) n * ch0 * h * w);
  ddim_conv2d_forward (input, n, c->in_channels, h, w, u->conv_in.w, u->conv_in.b, ch0, 3, 1, 1, 1,
                       cur.data, A);
  g_array_append_val (skips, cur);

  for (int i = 0; i < L; i++)
    {
      const DdimBlock *blk = &u->down[i];
      for (int j = 0; j < blk->n_resnets; j++)
        {
          Activation next = { NULL, ddim_arena_mark (A), blk->channels, h, w };
          next.data = resnet_forward (u, &blk->resnets[j], cur.data, n, h, w, temb_act, A);
          if (blk->has_attention)
            attention_forward (u, &blk->attentions[j], next.data, n, h * w, A);
          cur = next;
          g_array_append_val (skips, cur);
        }
      if (blk->has_resample)
        {
          /* downsample_padding 0: pad right and bottom only (diffusers F.pad). */
          int pad_tl = c->downsample_padding, pad_br = 1;
          int oh = ddim_conv2d_out_size (h, 3, 2, pad_tl, pad_br);
          int ow = ddim_conv2d_out_size (w, 3, 2, pad_tl, pad_br);
          Activation next = { NULL, ddim_arena_mark (A), blk->channels, oh, ow };
          next.data = ddim_arena_alloc (A, (gsize) n * blk->channels * oh * ow);
          ddim_conv2d_forward (cur.data, n, blk->channels, h, w, blk->resample.w, blk->resample.b,
                               blk->channels, 3, 2, pad_tl, pad_br, next.data, A);
          h = oh;
          w = ow;
          cur = next;
          g_array_append_val (skips, cur);
        }
    }

  /* Mid block. Its output is h-space. */
  {
    float *m = resnet_forward (u, &u->mid_resnets[0], cur.data, n, h, w, temb_act, A);
    if (u->mid_has_attention)
      attention_forward (u, &u->mid_attention, m, n, h * w, A);
    cur.mark = ddim_arena_mark (A);
    cur.data = resnet_forward (u, &u->mid_resnets[1], m, n, h, w, temb_act, A);
  }

  for (int i = 0; i < L; i++)
    {
      const DdimBlock *blk = &u->up[i];
      for (int j = 0; j < blk->n_resnets; j++)
        {
          Activation skip = g_array_index (skips, Activation, skips->len - 1);
          g_array_set_size (skips, skips->len - 1);
          gsize hw = (gsize) h * w;
          int cat_c = cur.channels + skip.channels;
          float *cat = ddim_arena_alloc (A, (gsize) n * cat_c * hw);
          for (int b = 0; b < n; b++)
            {
              memcpy (cat + (gsize) b * cat_c * hw, cur.data + (gsize) b * cur.channels * hw,
                      sizeof (float) * cur.channels * hw);
              memcpy (cat + ((gsize) b * cat_c + cur.channels) * hw,
                      skip.data + (gsize) b * skip.channels * hw,
                      sizeof (float) * skip.channels * hw);
            }
          float *o = resnet_forward (u, &blk->resnets[j], cat, n, h, w, temb_act, A);
          if (blk->has_attention)
            attention_forward (u, &blk->attentions[j], o, n, (int) hw, A);
          /* Move the result into the popped skip's place. */
          cur.mark = skip.mark;
          cur.data = ddim_arena_relocate (A, skip.mark, o, (gsize) n * blk->channels * hw);
          cur.channels = blk->channels;
        }
      if (blk->has_resample)
        {
          float *up = ddim_arena_alloc (A, (gsize) n * blk->channels * 4 * h * w);
          ddim_upsample_nearest2x_forward (cur.data, n, blk->channels, h, w, up);
          h *= 2;
          w *= 2;
          gsize size = (gsize) n * blk->channels * h * w;
          float *o = ddim_arena_alloc (A, size);
          ddim_conv2d_forward (up, n, blk->channels, h, w, blk->resample.w, blk->resample.b,
                               blk->channels, 3, 1, 1, 1, o, A);
          cur.data = ddim_arena_relocate (A, cur.mark, o, size);
        }
    }
  g_assert (skips->len == 0);
  g_array_unref (skips);

  gsize hw = (gsize) h * w;
  float *normed = ddim_arena_alloc (A, (gsize) n * ch0 * hw);
  ddim_group_norm_forward (cur.data, n, ch0, (int) hw, u->norm_out.groups, (float) c->norm_eps,
                           u->norm_out.gamma, u->norm_out.beta, TRUE, normed);
  ddim_conv2d_forward (normed, n, ch0, h, w, u->conv_out.w, u->conv_out.b, c->out_channels, 3, 1,
                       1, 1, out, A);
  ddim_arena_release (A, 0);
  return TRUE;
}

/* Multiply-adds, walking the same structure as the forward. */
static double
conv_macs (const DdimConvLayer *l, int oh, int ow)
{
  return (double) l->cout * l->cin * l->k * l->k * oh * ow;
}

static double
resnet_macs (const DdimResnetLayer *r, int h, int w)
{
  double m = conv_macs (&r->conv1, h, w) + conv_macs (&r->conv2, h, w)
             + (double) r->temb_proj.out * r->temb_proj.in;
  if (r->shortcut.w)
    m += conv_macs (&r->shortcut, h, w);
  return m;
}

static double
attention_macs (const DdimAttentionLayer *a, int hw)
{
  return 4.0 * a->channels * a->channels * hw + 2.0 * (double) hw * hw * a->channels;
}

double
ddim_unet_count_macs (DdimUNet *u, int n, int height, int width)
{
  const DdimUNetConfig *c = &u->config;
  int h = height, w = width, L = c->n_levels;
  double m = conv_macs (&u->conv_in, h, w) + (double) u->temb1.out * u->temb1.in
             + (double) u->temb2.out * u->temb2.in;
  for (int i = 0; i < L; i++)
    {
      for (int j = 0; j < u->down[i].n_resnets; j++)
        {
          m += resnet_macs (&u->down[i].resnets[j], h, w);
          if (u->down[i].has_attention)
            m += attention_macs (&u->down[i].attentions[j], h * w);
        }
      if (u->down[i].has_resample)
        {
          h = ddim_conv2d_out_size (h, 3, 2, c->downsample_padding, 1);
          w = ddim_conv2d_out_size (w, 3, 2, c->downsample_padding, 1);
          m += conv_macs (&u->down[i].resample, h, w);
        }
    }
  m += resnet_macs (&u->mid_resnets[0], h, w) + resnet_macs (&u->mid_resnets[1], h, w);
  if (u->mid_has_attention)
    m += attention_macs (&u->mid_attention, h * w);
  for (int i = 0; i < L; i++)
    {
      for (int j = 0; j < u->up[i].n_resnets; j++)
        {
          m += resnet_macs (&u->up[i].resnets[j], h, w);
          if (u->up[i].has_attention)
            m += attention_macs (&u->up[i].attentions[j], h * w);
        }
      if (u->up[i].has_resample)
        {
          h *= 2;
          w *= 2;
          m += conv_macs (&u->up[i].resample, h, w);
        }
    }
  m += conv_macs (&u->conv_out, h, w);
  return m * n;
}
