/* Reverse-mode differentiation of the UNet2DModel forward pass, walking the
 * structure of ddim_unet_run backwards over the activations its tape kept.
 *
 * The backward is split where h-space sits: the decoder half (output back
 * to the mid-block output and the skips) and the encoder half (h and skip
 * gradients back to the input). The VJP runs both; the h-space Jacobian
 * products run one. Parameter gradients accumulate into a flat array laid
 * out like the parameters. */
#include <string.h>

#include "ddim/error.h"
#include "model/unet-private.h"

#define MAX_SKIPS (DDIM_MAX_LEVELS * (DDIM_MAX_LAYERS_PER_BLOCK + 1) + 1)

typedef struct {
  DdimUNet     *u;
  DdimUNetTape *tape;
  DdimArena    *A;           /* scratch */
  DdimArena    *G;           /* gradients that live across layers */
  float        *grad_params; /* NULL: parameter gradients not wanted */
  float        *d_temb_act;  /* [n, temb] accumulated */
  float        *d_skip[MAX_SKIPS];
  int           skip_channels[MAX_SKIPS];
  int           n_skips;
  int           n;
} Back;

/* The gradient slot of a parameter pointer, or NULL. */
static float *
G (Back *b, const float *param)
{
  if (b->grad_params == NULL || param == NULL)
    return NULL;
  return b->grad_params + (param - b->u->params);
}

static void
add_into (float *dst, const float *src, gsize count)
{
  for (gsize i = 0; i < count; i++)
    dst[i] += src[i];
}

/* The context the units' backward passes (resnet.c, resampler.c) see. */
static DdimBackRun
unit_back (Back *b)
{
  return (DdimBackRun) { b->u, b->A, b->grad_params, b->tape->temb_act, b->d_temb_act, b->n };
}

/* Backward of one ResnetBlock2D. @dout: gradient of its output (may be
 * modified). Writes the gradient of its input to @dx. */
static void
resnet_backward (Back *b, const DdimResnetLayer *r, const DdimUnitSave *s, int h, int w,
                 float *dout, float *dx)
{
  DdimBackRun br = unit_back (b);
  ddim_resnet_backward (&br, r, s, h, w, dout, dx);
}

static void
attention_backward (Back *b, const DdimAttentionLayer *a, const float *x_in, int hw, float *d)
{
  DdimAttentionParams p;
  ddim_unet_attention_params (b->u, a, &p);
  DdimAttentionGrads g = {
    .gn_gamma = a->has_norm ? G (b, a->norm.gamma) : NULL,
    .gn_beta = a->has_norm ? G (b, a->norm.beta) : NULL,
    .q_w = G (b, a->q.w), .q_b = G (b, a->q.b), .k_w = G (b, a->k.w), .k_b = G (b, a->k.b),
    .v_w = G (b, a->v.w), .v_b = G (b, a->v.b), .o_w = G (b, a->o.w), .o_b = G (b, a->o.b),
  };
  ddim_attention_backward (x_in, b->n, a->channels, hw, &p, d, d,
                           b->grad_params ? &g : NULL, b->A);
}

/* A gradient buffer that lives until the backward ends. */
static float *
grad_alloc (Back *b, gsize count)
{
  return ddim_arena_alloc (b->G, count);
}

/* Records the skips in forward push order with their channel counts. */
static void
list_skips (Back *b)
{
  const DdimUNetConfig *c = &b->u->config;
  int k = 0;
  b->skip_channels[k++] = c->block_out_channels[0];
  for (int i = 0; i < c->n_levels; i++)
    {
      for (int j = 0; j < b->u->down[i].n_resnets; j++)
        b->skip_channels[k++] = c->block_out_channels[i];
      if (b->u->down[i].has_resample)
        b->skip_channels[k++] = c->block_out_channels[i];
    }
  b->n_skips = k;
  memset (b->d_skip, 0, sizeof b->d_skip);
}

/* Decoder half: from the output cotangent @w to the h-space gradient
 * (returned, [n, C_mid, ...]) and the skip gradients (in b->d_skip). */
static float *
decoder_backward (Back *b, const float *w)
{
  DdimUNet *u = b->u;
  const DdimUNetConfig *c = &u->config;
  DdimUNetTape *tp = b->tape;
  int n = b->n, L = c->n_levels, ch0 = c->block_out_channels[0];
  int H = tp->height, W = tp->width;
  gsize hw = (gsize) H * W;
  DdimArena *A = b->A;

  float *d_cur = grad_alloc (b, (gsize) n * ch0 * hw);
  {
    gsize mark = ddim_arena_mark (A);
    float *normed = ddim_arena_alloc (A, (gsize) n * ch0 * hw);
    ddim_group_norm_forward (tp->final_in, n, ch0, (int) hw, u->norm_out.groups,
                             (float) c->norm_eps, u->norm_out.gamma, u->norm_out.beta, TRUE,
                             normed);
    float *d_normed = ddim_arena_alloc (A, (gsize) n * ch0 * hw);
    ddim_conv2d_backward (normed, n, ch0, H, W, u->conv_out.w, c->out_channels, 3, 1, 1, 1, w,
                          d_normed, G (b, u->conv_out.w), G (b, u->conv_out.b), A);
    ddim_group_norm_backward (tp->final_in, n, ch0, (int) hw, u->norm_out.groups,
                              (float) c->norm_eps, u->norm_out.gamma, u->norm_out.beta, TRUE,
                              d_normed, d_cur, G (b, u->norm_out.gamma), G (b, u->norm_out.beta));
    ddim_arena_release (A, mark);
  }

  int top = b->n_skips;
  /* Skips pop in reverse push order; walking the up blocks backwards, the
   * first skip met is the one popped last. */
  int pops_total = 0;
  for (int i = 0; i < L; i++)
    pops_total += u->up[i].n_resnets;
  int next_skip = top - pops_total; /* index of the skip popped last */

  for (int i = L - 1; i >= 0; i--)
    {
      const DdimBlock *blk = &u->up[i];
      int level = L - 1 - i;
      int h = H >> level, wd = W >> level;
      int cch = blk->channels;
      if (blk->has_resample)
        {
          DdimBackRun br = unit_back (b);
          float *d_prev = grad_alloc (b, (gsize) n * cch * h * wd);
          ddim_resampler_backward (&br, blk, FALSE, &tp->up_resampler[i], h, wd, d_cur, d_prev);
          d_cur = d_prev;
        }
      for (int j = blk->n_resnets - 1; j >= 0; j--)
        {
          const DdimUnitSave *s = &tp->up[i][j];
          const DdimResnetLayer *r = &blk->resnets[j];
          gsize hwl = (gsize) h * wd;
          if (blk->has_attention)
            attention_backward (b, &blk->attentions[j], s->attn_in, (int) hwl, d_cur);
          float *d_cat = grad_alloc (b, (gsize) n * r->cin * hwl);
          resnet_backward (b, r, s, h, wd, d_cur, d_cat);
          int skip_idx = next_skip++;
          int sc = b->skip_channels[skip_idx];
          int hc = r->cin - sc;
          float *d_h = grad_alloc (b, (gsize) n * hc * hwl);
          float *d_s = grad_alloc (b, (gsize) n * sc * hwl);
          for (int bi = 0; bi < n; bi++)
            {
              memcpy (d_h + (gsize) bi * hc * hwl, d_cat + (gsize) bi * r->cin * hwl,
                      sizeof (float) * hc * hwl);
              memcpy (d_s + (gsize) bi * sc * hwl, d_cat + ((gsize) bi * r->cin + hc) * hwl,
                      sizeof (float) * sc * hwl);
            }
          b->d_skip[skip_idx] = d_s;
          d_cur = d_h;
        }
    }
  return d_cur;
}

/* Encoder half: from the h-space gradient @d_h (and b->d_skip, NULL
 * entries meaning zero) back to the model input; returns its gradient
 * ([n, in_channels, H, W], after center_input_sample's factor). */
static float *
encoder_backward (Back *b, float *d_h)
{
  DdimUNet *u = b->u;
  const DdimUNetConfig *c = &u->config;
  DdimUNetTape *tp = b->tape;
  int n = b->n, L = c->n_levels, ch0 = c->block_out_channels[0];
  int H = tp->height, W = tp->width;
  int f = 1 << (L - 1);
  int h = H / f, w = W / f;
  int cm = c->block_out_channels[L - 1];
  gsize hwl = (gsize) h * w;

  /* Mid block, reversed. */
  float *d_m = grad_alloc (b, (gsize) n * cm * hwl);
  resnet_backward (b, &u->mid_resnets[1], &tp->mid[1], h, w, d_h, d_m);
  if (u->mid_has_attention)
    attention_backward (b, &u->mid_attention, tp->mid[0].attn_in, (int) hwl, d_m);
  float *d_cur = grad_alloc (b, (gsize) n * cm * hwl);
  resnet_backward (b, &u->mid_resnets[0], &tp->mid[0], h, w, d_m, d_cur);

  int skip = b->n_skips;
  for (int i = L - 1; i >= 0; i--)
    {
      const DdimBlock *blk = &u->down[i];
      int cch = blk->channels;
      if (blk->has_resample)
        {
          skip--;
          if (b->d_skip[skip])
            add_into (d_cur, b->d_skip[skip], (gsize) n * cch * hwl);
          int ih = h * 2, iw = w * 2;
          DdimBackRun br = unit_back (b);
          float *d_prev = grad_alloc (b, (gsize) n * cch * ih * iw);
          ddim_resampler_backward (&br, blk, TRUE, &tp->down_resampler[i], ih, iw, d_cur, d_prev);
          d_cur = d_prev;
          h = ih;
          w = iw;
          hwl = (gsize) h * w;
        }
      for (int j = blk->n_resnets - 1; j >= 0; j--)
        {
          skip--;
          if (b->d_skip[skip])
            add_into (d_cur, b->d_skip[skip], (gsize) n * cch * hwl);
          const DdimUnitSave *s = &tp->down[i][j];
          const DdimResnetLayer *r = &blk->resnets[j];
          if (blk->has_attention)
            attention_backward (b, &blk->attentions[j], s->attn_in, (int) hwl, d_cur);
          float *d_prev = grad_alloc (b, (gsize) n * r->cin * hwl);
          resnet_backward (b, r, s, h, w, d_cur, d_prev);
          d_cur = d_prev;
        }
    }
  skip--;
  g_assert (skip == 0);
  if (b->d_skip[0])
    add_into (d_cur, b->d_skip[0], (gsize) n * ch0 * hwl);
  float *d_in = grad_alloc (b, (gsize) n * c->in_channels * hwl);
  ddim_conv2d_backward (tp->input, n, c->in_channels, H, W, u->conv_in.w, ch0, 3, 1, 1, 1, d_cur,
                        d_in, G (b, u->conv_in.w), G (b, u->conv_in.b), b->A);
  if (c->center_input_sample)
    for (gsize i = 0; i < (gsize) n * c->in_channels * hwl; i++)
      d_in[i] *= 2.f;
  return d_in;
}

/* Gradients of the time-embedding MLP from the accumulated d(temb_act). */
static void
temb_backward (Back *b)
{
  if (b->grad_params == NULL)
    return;
  DdimUNet *u = b->u;
  DdimUNetTape *tp = b->tape;
  int n = b->n, temb = ddim_unet_config_temb_dim (&u->config), ch0 = u->config.block_out_channels[0];
  gsize cnt = (gsize) n * temb;
  gsize mark = ddim_arena_mark (b->A);
  float *d = ddim_arena_alloc (b->A, cnt);
  float *t1_act = ddim_arena_alloc (b->A, cnt);
  float *d1 = ddim_arena_alloc (b->A, cnt);
  ddim_silu_backward (tp->temb2_pre, b->d_temb_act, d, cnt);
  memcpy (t1_act, tp->temb1_pre, cnt * sizeof (float));
  ddim_silu_forward (t1_act, cnt);
  ddim_linear_backward (t1_act, n, temb, u->temb2.w, temb, d, d1, G (b, u->temb2.w), G (b, u->temb2.b));
  ddim_silu_backward (tp->temb1_pre, d1, d1, cnt);
  ddim_linear_backward (tp->emb, n, ch0, u->temb1.w, temb, d1, NULL, G (b, u->temb1.w),
                        G (b, u->temb1.b));
  ddim_arena_release (b->A, mark);
}

static DdimUNetTape *
get_tape (DdimUNet *u)
{
  if (u->tape == NULL)
    {
      u->tape = g_new0 (DdimUNetTape, 1);
      ddim_arena_init (&u->tape->store);
    }
  return u->tape;
}

static void
back_init (Back *b, DdimUNet *u, int n, float *grad_params)
{
  memset (b, 0, sizeof *b);
  b->u = u;
  b->tape = u->tape;
  b->A = &u->arena;
  b->G = &u->grad_arena;
  b->n = n;
  b->grad_params = grad_params;
  ddim_arena_reset (b->A);
  ddim_arena_reset (b->G);
  b->d_temb_act = ddim_arena_alloc0 (b->G, (gsize) n * ddim_unet_config_temb_dim (&u->config));
  list_skips (b);
}

void
ddim_unet_hspace_shape (DdimUNet *u, int height, int width, int *channels, int *h, int *w)
{
  int f = ddim_unet_config_size_factor (&u->config);
  if (channels)
    *channels = u->config.block_out_channels[u->config.n_levels - 1];
  if (h)
    *h = height / f;
  if (w)
    *w = width / f;
}

static gsize
hspace_count (DdimUNet *u, int n, int height, int width)
{
  int c, h, w;
  ddim_unet_hspace_shape (u, height, width, &c, &h, &w);
  return (gsize) n * c * h * w;
}

gboolean
ddim_unet_vjp (DdimUNet *u, const float *x, int n, int height, int width, const float *t,
               const float *w, DdimUNetVjp *io, GError **error)
{
  g_return_val_if_fail (u && x && t && io && n > 0, FALSE);
  g_return_val_if_fail (w != NULL || io->cotangent_func != NULL, FALSE);
  if (!ddim_unet_check_size (u, height, width, error))
    return FALSE;
  const DdimUNetConfig *c = &u->config;
  gsize out_count = (gsize) n * c->out_channels * height * width;
  DdimUNetTape *tape = get_tape (u);
  g_autofree float *own_out = io->out ? NULL : g_new (float, out_count);
  float *out = io->out ? io->out : own_out;
  ddim_unet_run (u, x, n, height, width, t, io->hspace_delta, out, tape);
  g_autofree float *own_w = NULL;
  if (io->cotangent_func)
    {
      own_w = g_new (float, out_count);
      if (!io->cotangent_func (out, own_w, out_count, io->cotangent_data, error))
        return FALSE;
      w = own_w;
    }
  if (io->hspace)
    memcpy (io->hspace, tape->hspace, hspace_count (u, n, height, width) * sizeof (float));

  Back b;
  back_init (&b, u, n, io->grad_params);
  float *d_h = decoder_backward (&b, w);
  if (io->grad_hspace)
    memcpy (io->grad_hspace, d_h, hspace_count (u, n, height, width) * sizeof (float));
  if (io->grad_x || io->grad_params)
    {
      float *d_in = encoder_backward (&b, d_h);
      if (io->grad_x)
        memcpy (io->grad_x, d_in, (gsize) n * c->in_channels * height * width * sizeof (float));
      temb_backward (&b);
    }
  ddim_arena_release (b.A, 0);
  ddim_arena_release (b.G, 0);
  return TRUE;
}

gboolean
ddim_unet_hspace_vjp (DdimUNet *u, const float *x, int n, int height, int width, const float *t,
                      const float *cot, float *hspace, float *grad_x, GError **error)
{
  g_return_val_if_fail (u && x && t && cot && grad_x && n > 0, FALSE);
  if (!ddim_unet_check_size (u, height, width, error))
    return FALSE;
  const DdimUNetConfig *c = &u->config;
  DdimUNetTape *tape = get_tape (u);
  g_autofree float *out = g_new (float, (gsize) n * c->out_channels * height * width);
  ddim_unet_run (u, x, n, height, width, t, NULL, out, tape);
  gsize hc = hspace_count (u, n, height, width);
  if (hspace)
    memcpy (hspace, tape->hspace, hc * sizeof (float));
  Back b;
  back_init (&b, u, n, NULL);
  float *d_h = ddim_arena_alloc (b.G, hc);
  memcpy (d_h, cot, hc * sizeof (float));
  float *d_in = encoder_backward (&b, d_h);
  memcpy (grad_x, d_in, (gsize) n * c->in_channels * height * width * sizeof (float));
  ddim_arena_release (b.A, 0);
  ddim_arena_release (b.G, 0);
  return TRUE;
}

gboolean
ddim_unet_forward_hspace (DdimUNet *u, const float *x, int n, int height, int width,
                          const float *t, const float *hspace_delta, float *hspace, float *out,
                          GError **error)
{
  g_return_val_if_fail (u && x && t && out && n > 0, FALSE);
  if (!ddim_unet_check_size (u, height, width, error))
    return FALSE;
  if (hspace == NULL)
    {
      ddim_unet_run (u, x, n, height, width, t, hspace_delta, out, NULL);
      return TRUE;
    }
  /* The tape keeps h; the fast path would overwrite it in place. */
  DdimUNetTape *tape = get_tape (u);
  ddim_unet_run (u, x, n, height, width, t, hspace_delta, out, tape);
  memcpy (hspace, tape->hspace, hspace_count (u, n, height, width) * sizeof (float));
  return TRUE;
}
