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

/* Backward of one ResnetBlock2D. @dout: gradient of its output (may be
 * modified). Writes the gradient of its input to @dx. */
static void
resnet_backward (Back *b, const DdimResnetLayer *r, const DdimUnitSave *s, int h, int w,
                 float *dout, float *dx)
{
  const DdimUNetConfig *c = &b->u->config;
  DdimArena *A = b->A;
  int n = b->n;
  gsize hw = (gsize) h * w;
  float eps = (float) c->norm_eps;
  gsize cout_n = (gsize) n * r->cout * hw, cin_n = (gsize) n * r->cin * hw;
  gsize mark = ddim_arena_mark (A);

  if (r->output_scale != 1.f)
    for (gsize i = 0; i < cout_n; i++)
      dout[i] /= r->output_scale;

  /* Shortcut branch first: dx = dshortcut. */
  if (r->shortcut.w)
    ddim_conv2d_backward (s->x, n, r->cin, h, w, r->shortcut.w, r->cout, 1, 1, 0, 0, dout, dx,
                          G (b, r->shortcut.w), G (b, r->shortcut.b), A);
  else
    memcpy (dx, dout, cout_n * sizeof (float));

  /* Recompute t2 (the conv2 input) from h1: conv2's weight gradient needs
   * it, and the scale-shift backward needs its parts; the input gradient
   * alone does not. */
  gboolean want_params = b->grad_params != NULL;
  float *t2 = ddim_arena_alloc (A, cout_n);
  float *u = NULL;
  float *tp_grad = ddim_arena_alloc0 (A, (gsize) n * r->temb_proj.out);
  if (!c->scale_shift)
    {
      if (want_params && s->t2)
        t2 = s->t2;
      else if (want_params)
        ddim_group_norm_forward_threaded (s->h1, n, r->cout, (int) hw, r->norm2.groups, eps,
                                          r->norm2.gamma, r->norm2.beta, TRUE, t2, A);
    }
  else
    {
      u = ddim_arena_alloc (A, cout_n);
      ddim_group_norm_forward (s->h1, n, r->cout, (int) hw, r->norm2.groups, eps, r->norm2.gamma,
                               r->norm2.beta, FALSE, u);
      for (int bi = 0; bi < n; bi++)
        for (int ch = 0; ch < r->cout; ch++)
          {
            float scale = s->tp[(gsize) bi * 2 * r->cout + ch];
            float shift = s->tp[(gsize) bi * 2 * r->cout + r->cout + ch];
            const float *up = u + ((gsize) bi * r->cout + ch) * hw;
            float *tq = t2 + ((gsize) bi * r->cout + ch) * hw;
            for (gsize i = 0; i < hw; i++)
              tq[i] = up[i] * (1.f + scale) + shift;   /* pre-SiLU value v */
          }
    }
  float *d_t2 = ddim_arena_alloc (A, cout_n);
  if (!c->scale_shift)
    ddim_conv2d_backward (t2, n, r->cout, h, w, r->conv2.w, r->cout, 3, 1, 1, 1, dout, d_t2,
                          G (b, r->conv2.w), G (b, r->conv2.b), A);
  else
    {
      /* conv2's input is silu(v); v stays in t2 for the SiLU backward. */
      float *sv = s->t2;
      if (sv == NULL)
        {
          sv = ddim_arena_alloc (A, cout_n);
          memcpy (sv, t2, cout_n * sizeof (float));
          ddim_silu_forward (sv, cout_n);
        }
      ddim_conv2d_backward (sv, n, r->cout, h, w, r->conv2.w, r->cout, 3, 1, 1, 1, dout, d_t2,
                            G (b, r->conv2.w), G (b, r->conv2.b), A);
    }

  float *d_h1 = d_t2; /* in place from here */
  if (!c->scale_shift)
    ddim_group_norm_backward (s->h1, n, r->cout, (int) hw, r->norm2.groups, eps, r->norm2.gamma,
                              r->norm2.beta, TRUE, d_t2, d_h1, G (b, r->norm2.gamma),
                              G (b, r->norm2.beta));
  else
    {
      ddim_silu_backward (t2, d_t2, d_t2, cout_n); /* d_v */
      for (int bi = 0; bi < n; bi++)
        for (int ch = 0; ch < r->cout; ch++)
          {
            float scale = s->tp[(gsize) bi * 2 * r->cout + ch];
            const float *up = u + ((gsize) bi * r->cout + ch) * hw;
            float *dv = d_t2 + ((gsize) bi * r->cout + ch) * hw;
            double ds = 0, dsh = 0;
            for (gsize i = 0; i < hw; i++)
              {
                ds += (double) dv[i] * up[i];
                dsh += dv[i];
                dv[i] *= 1.f + scale;
              }
            tp_grad[(gsize) bi * 2 * r->cout + ch] = (float) ds;
            tp_grad[(gsize) bi * 2 * r->cout + r->cout + ch] = (float) dsh;
          }
      ddim_group_norm_backward (s->h1, n, r->cout, (int) hw, r->norm2.groups, eps, r->norm2.gamma,
                                r->norm2.beta, FALSE, d_t2, d_h1, G (b, r->norm2.gamma),
                                G (b, r->norm2.beta));
    }
  if (!c->scale_shift)
    for (int bi = 0; bi < n; bi++)
      for (int ch = 0; ch < r->cout; ch++)
        {
          const float *p = d_h1 + ((gsize) bi * r->cout + ch) * hw;
          double sum = 0;
          for (gsize i = 0; i < hw; i++)
            sum += p[i];
          tp_grad[(gsize) bi * r->cout + ch] = (float) sum;
        }

  /* Time projection: accumulate into the shared time-embedding gradient. */
  {
    int temb = r->temb_proj.in;
    float *d_temb = ddim_arena_alloc (A, (gsize) n * temb);
    ddim_linear_backward (b->tape->temb_act, n, temb, r->temb_proj.w, r->temb_proj.out, tp_grad,
                          d_temb, G (b, r->temb_proj.w), G (b, r->temb_proj.b));
    add_into (b->d_temb_act, d_temb, (gsize) n * temb);
  }

  /* conv1 on t1 = silu(gn1(x)), recomputed for its weight gradient. */
  float *t1 = s->t1 ? s->t1 : ddim_arena_alloc (A, cin_n);
  if (want_params && s->t1 == NULL)
    ddim_group_norm_forward_threaded (s->x, n, r->cin, (int) hw, r->norm1.groups, eps,
                                      r->norm1.gamma, r->norm1.beta, TRUE, t1, A);
  float *d_t1 = ddim_arena_alloc (A, cin_n);
  ddim_conv2d_backward (t1, n, r->cin, h, w, r->conv1.w, r->cout, 3, 1, 1, 1, d_h1, d_t1,
                        G (b, r->conv1.w), G (b, r->conv1.b), A);
  ddim_group_norm_backward (s->x, n, r->cin, (int) hw, r->norm1.groups, eps, r->norm1.gamma,
                            r->norm1.beta, TRUE, d_t1, d_t1, G (b, r->norm1.gamma),
                            G (b, r->norm1.beta));
  add_into (dx, d_t1, cin_n);
  ddim_arena_release (A, mark);
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
          /* o = conv(nearest2x(cur)), at 2h x 2w. */
          gsize mark = ddim_arena_mark (A);
          const float *in = tp->up[i][blk->n_resnets - 1].out;
          float *upb = ddim_arena_alloc (A, (gsize) n * cch * 4 * h * wd);
          ddim_upsample_nearest2x_forward (in, n, cch, h, wd, upb);
          float *d_up = ddim_arena_alloc (A, (gsize) n * cch * 4 * h * wd);
          ddim_conv2d_backward (upb, n, cch, 2 * h, 2 * wd, blk->resample.w, cch, 3, 1, 1, 1, d_cur,
                                d_up, G (b, blk->resample.w), G (b, blk->resample.b), A);
          float *d_prev = grad_alloc (b, (gsize) n * cch * h * wd);
          ddim_upsample_nearest2x_backward (d_up, n, cch, h, wd, d_prev);
          ddim_arena_release (A, mark);
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
          const float *in = tp->down[i][blk->n_resnets - 1].out;
          float *d_prev = grad_alloc (b, (gsize) n * cch * ih * iw);
          ddim_conv2d_backward (in, n, cch, ih, iw, blk->resample.w, cch, 3, 2,
                                c->downsample_padding, 1, d_cur, d_prev, G (b, blk->resample.w),
                                G (b, blk->resample.b), b->A);
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
