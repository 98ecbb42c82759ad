/* One ResnetBlock2D of the UNet: forward, backward and JVP side by side.
 *
 *   t1 = silu(norm1(x)); h1 = conv1(t1) + b1 (+ time projection);
 *   t2 = silu(norm2(h1)) or silu(norm2(h1) (1 + scale) + shift);
 *   out = (shortcut(x) + conv2(t2) + b2) / output_scale.
 *
 * A resampling resnet (guided-diffusion ResBlock with up/down) pools or
 * upsamples t1 and x right after norm1 + SiLU; everything after runs at
 * the new size. */
#include <string.h>

#include "model/unet-private.h"

void
ddim_resnet_out_size (const DdimResnetLayer *r, int h, int w, int *oh, int *ow)
{
  switch (r->resample)
    {
    case DDIM_RESNET_DOWN: *oh = h / 2; *ow = w / 2; break;
    case DDIM_RESNET_UP: *oh = 2 * h; *ow = 2 * w; break;
    case DDIM_RESNET_SAME:
    default: *oh = h; *ow = w; break;
    }
}

/* y = R(x) at input size h x w. */
static void
resample_forward (DdimResnetResample kind, const float *x, int n, int c, int h, int w, float *y)
{
  if (kind == DDIM_RESNET_DOWN)
    ddim_avgpool2x_forward (x, n, c, h, w, y);
  else
    ddim_upsample_nearest2x_forward (x, n, c, h, w, y);
}

/* dx = R^T(dy), dx at input size h x w. */
static void
resample_backward (DdimResnetResample kind, const float *dy, int n, int c, int h, int w, float *dx)
{
  if (kind == DDIM_RESNET_DOWN)
    ddim_avgpool2x_backward (dy, n, c, h, w, dx);
  else
    ddim_upsample_nearest2x_backward (dy, n, c, h, w, dx);
}

/* out = shortcut(xs) + b2, what conv2 then accumulates onto. */
static void
shortcut_init (DdimRun *run, const DdimResnetLayer *r, const float *xs, int h, int w,
               float *out)
{
  int n = run->n;
  gsize hw = (gsize) h * w;
  DdimArena *A = run->scratch;
  gsize mark = ddim_arena_mark (A);
  float *values = ddim_arena_alloc (A, (gsize) n * r->cout);
  for (int b = 0; b < n; b++)
    for (int ch = 0; ch < r->cout; ch++)
      values[(gsize) b * r->cout + ch] = r->conv2.b[ch] + (r->shortcut.w ? r->shortcut.b[ch] : 0.f);
  ddim_parallel_fill_rows (A->parallel, out, (gsize) n * r->cout, hw, values,
                           r->shortcut.w ? NULL : xs);
  if (r->shortcut.w)
    ddim_conv2d_forward_accumulate (xs, n, r->cin, h, w, r->shortcut.w, r->cout, 1, 1, 0, 0,
                                    out, A);
  ddim_arena_release (A, mark);
}

float *
ddim_resnet_forward (DdimRun *run, const DdimResnetLayer *r, const float *x, int hi, int wi,
                     DdimUnitSave *save)
{
  const DdimUNetConfig *c = &run->u->config;
  DdimArena *A = run->scratch;
  int n = run->n, h, w;
  ddim_resnet_out_size (r, hi, wi, &h, &w);
  gboolean resample = r->resample != DDIM_RESNET_SAME;
  gsize hw = (gsize) h * w, hwi = (gsize) hi * wi;
  float eps = (float) c->norm_eps;
  float *out = ddim_run_keep_alloc (run, (gsize) n * r->cout * hw);
  float *h1 = run->tape ? ddim_run_keep_alloc (run, (gsize) n * r->cout * hw) : NULL;
  float *tp = run->tape ? ddim_run_keep_alloc (run, (gsize) n * r->temb_proj.out) : NULL;
  /* With a tape, the inputs of conv1 and conv2 are kept for their weight
   * gradients; otherwise one scratch buffer serves both. */
  float *t1 = run->tape ? ddim_run_keep_alloc (run, (gsize) n * r->cin * hw) : NULL;
  float *t2 = run->tape ? ddim_run_keep_alloc (run, (gsize) n * r->cout * hw) : NULL;
  float *xr = run->tape && resample ? ddim_run_keep_alloc (run, (gsize) n * r->cin * hw) : NULL;
  /* A disposable input (the decoder's [h, skip]) is normalised in place. */
  gboolean in_place = run->tape == NULL && !resample && x == run->disposable;
  gsize mark = ddim_arena_mark (A);
  if (in_place)
    {
      /* The shortcut reads x before norm1 overwrites it. */
      shortcut_init (run, r, x, h, w, out);
      t1 = run->disposable;
      t2 = ddim_arena_alloc (A, (gsize) n * r->cout * hw);
    }
  else if (t1 == NULL)
    t2 = t1 = ddim_arena_alloc (A, (gsize) n * MAX (r->cin, r->cout) * hw);
  if (h1 == NULL)
    h1 = ddim_arena_alloc (A, (gsize) n * r->cout * hw);
  if (tp == NULL)
    tp = ddim_arena_alloc (A, (gsize) n * r->temb_proj.out);

  if (!resample)
    ddim_group_norm_forward_threaded (x, n, r->cin, (int) hw, r->norm1.groups, eps,
                                      r->norm1.gamma, r->norm1.beta, TRUE, t1, A);
  else
    {
      float *full = ddim_arena_alloc (A, (gsize) n * r->cin * hwi);
      ddim_group_norm_forward_threaded (x, n, r->cin, (int) hwi, r->norm1.groups, eps,
                                        r->norm1.gamma, r->norm1.beta, TRUE, full, A);
      resample_forward (r->resample, full, n, r->cin, hi, wi, t1);
      if (xr == NULL)
        xr = ddim_arena_alloc (A, (gsize) n * r->cin * hw);
      resample_forward (r->resample, x, n, r->cin, hi, wi, xr);
    }
  const float *xs = resample ? xr : x;   /* what the shortcut sees */
  ddim_linear_forward (run->temb_act, n, r->temb_proj.in, r->temb_proj.w, r->temb_proj.b,
                       r->temb_proj.out, tp);
  /* h1 = conv1(t1) + b1 (+ the time projection): biases folded into the
   * initial values the convolution accumulates onto. */
  float *values = ddim_arena_alloc (A, (gsize) n * r->cout);
  for (int b = 0; b < n; b++)
    for (int ch = 0; ch < r->cout; ch++)
      values[(gsize) b * r->cout + ch]
        = r->conv1.b[ch] + (c->scale_shift ? 0.f : tp[(gsize) b * r->cout + ch]);
  if (n == 1)   /* one set of biases: the convolution writes them with its output */
    ddim_conv2d_forward (t1, n, r->cin, h, w, r->conv1.w, values, r->cout, 3, 1, 1, 1, h1, A);
  else
    {
      ddim_parallel_fill_rows (A->parallel, h1, (gsize) n * r->cout, hw, values, NULL);
      ddim_conv2d_forward_accumulate (t1, n, r->cin, h, w, r->conv1.w, r->cout, 3, 1, 1, 1, h1,
                                      A);
    }
  if (!c->scale_shift)
    ddim_group_norm_forward_threaded (h1, n, r->cout, (int) hw, r->norm2.groups, eps,
                                      r->norm2.gamma, r->norm2.beta, TRUE, t2, A);
  else
    {
      ddim_group_norm_forward_threaded (h1, n, r->cout, (int) hw, r->norm2.groups, eps,
                                        r->norm2.gamma, r->norm2.beta, FALSE, t2, A);
      for (int b = 0; b < n; b++)
        for (int ch = 0; ch < r->cout; ch++)
          {
            float scale = tp[(gsize) b * 2 * r->cout + ch];
            float shift = tp[(gsize) b * 2 * r->cout + r->cout + ch];
            float *p = t2 + ((gsize) b * r->cout + ch) * hw;
            for (gsize i = 0; i < hw; i++)
              p[i] = p[i] * (1.f + scale) + shift;
          }
      ddim_silu_forward (t2, (gsize) n * r->cout * hw);
    }

  /* out = shortcut(x) + b2 + conv2(t2): the shortcut initialises out. */
  gsize total = (gsize) n * r->cout * hw;
  if (!in_place)
    shortcut_init (run, r, xs, h, w, out);
  ddim_conv2d_forward_accumulate (t2, n, r->cout, h, w, r->conv2.w, r->cout, 3, 1, 1, 1, out, A);
  if (r->output_scale != 1.f)
    for (gsize i = 0; i < total; i++)
      out[i] /= r->output_scale;
  ddim_arena_release (A, mark);
  if (save)
    {
      save->x = x;
      save->xr = run->tape && resample ? xr : NULL;
      save->h1 = h1;
      save->tp = tp;
      save->t1 = run->tape ? t1 : NULL;
      save->t2 = run->tape ? t2 : NULL;
      save->attn_in = NULL;
      save->out = out;
    }
  return out;
}

static void
add_into (float *dst, const float *src, gsize count)
{
  for (gsize i = 0; i < count; i++)
    dst[i] += src[i];
}

void
ddim_resnet_backward (DdimBackRun *b, const DdimResnetLayer *r, const DdimUnitSave *s, int hi,
                      int wi, float *dout, float *dx)
{
  const DdimUNetConfig *c = &b->u->config;
  DdimArena *A = b->scratch;
  int n = b->n, h, w;
  ddim_resnet_out_size (r, hi, wi, &h, &w);
  gboolean resample = r->resample != DDIM_RESNET_SAME;
  gsize hw = (gsize) h * w, hwi = (gsize) hi * wi;
  float eps = (float) c->norm_eps;
  gsize cout_n = (gsize) n * r->cout * hw, cin_n = (gsize) n * r->cin * hw;
  gsize cin_ni = (gsize) n * r->cin * hwi;
  gsize mark = ddim_arena_mark (A);

  if (r->output_scale != 1.f)
    for (gsize i = 0; i < cout_n; i++)
      dout[i] /= r->output_scale;

  /* Shortcut branch first: dxs = dshortcut, at the output size. */
  float *dxs = resample ? ddim_arena_alloc (A, cin_n) : dx;
  const float *xs = s->xr;
  if (resample && xs == NULL && r->shortcut.w)
    {
      float *tmp = ddim_arena_alloc (A, cin_n);
      resample_forward (r->resample, s->x, n, r->cin, hi, wi, tmp);
      xs = tmp;
    }
  if (!resample)
    xs = s->x;
  if (r->shortcut.w)
    ddim_conv2d_backward (xs, n, r->cin, h, w, r->shortcut.w, r->cout, 1, 1, 0, 0, dout, dxs,
                          ddim_back_grad (b, r->shortcut.w), ddim_back_grad (b, r->shortcut.b), A);
  else
    memcpy (dxs, dout, cout_n * sizeof (float));

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
                          ddim_back_grad (b, r->conv2.w), ddim_back_grad (b, r->conv2.b), A);
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
                            ddim_back_grad (b, r->conv2.w), ddim_back_grad (b, r->conv2.b), A);
    }

  float *d_h1 = d_t2; /* in place from here */
  if (!c->scale_shift)
    ddim_group_norm_backward (s->h1, n, r->cout, (int) hw, r->norm2.groups, eps, r->norm2.gamma,
                              r->norm2.beta, TRUE, d_t2, d_h1, ddim_back_grad (b, r->norm2.gamma),
                              ddim_back_grad (b, r->norm2.beta));
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
                                r->norm2.beta, FALSE, d_t2, d_h1,
                                ddim_back_grad (b, r->norm2.gamma),
                                ddim_back_grad (b, r->norm2.beta));
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
    ddim_linear_backward (b->temb_act, n, temb, r->temb_proj.w, r->temb_proj.out, tp_grad,
                          d_temb, ddim_back_grad (b, r->temb_proj.w),
                          ddim_back_grad (b, r->temb_proj.b));
    add_into (b->d_temb_act, d_temb, (gsize) n * temb);
  }

  /* conv1 on t1 = R(silu(gn1(x))), recomputed for its weight gradient. */
  float *t1 = (float *) s->t1;
  if (t1 == NULL)
    {
      t1 = ddim_arena_alloc (A, cin_n);
      if (want_params && !resample)
        ddim_group_norm_forward_threaded (s->x, n, r->cin, (int) hw, r->norm1.groups, eps,
                                          r->norm1.gamma, r->norm1.beta, TRUE, t1, A);
      else if (want_params)
        {
          float *full = ddim_arena_alloc (A, cin_ni);
          ddim_group_norm_forward_threaded (s->x, n, r->cin, (int) hwi, r->norm1.groups, eps,
                                            r->norm1.gamma, r->norm1.beta, TRUE, full, A);
          resample_forward (r->resample, full, n, r->cin, hi, wi, t1);
        }
    }
  float *d_t1 = ddim_arena_alloc (A, cin_n);
  ddim_conv2d_backward (t1, n, r->cin, h, w, r->conv1.w, r->cout, 3, 1, 1, 1, d_h1, d_t1,
                        ddim_back_grad (b, r->conv1.w), ddim_back_grad (b, r->conv1.b), A);
  float *d_t1i = d_t1;
  if (resample)
    {
      d_t1i = ddim_arena_alloc (A, cin_ni);
      resample_backward (r->resample, d_t1, n, r->cin, hi, wi, d_t1i);
      resample_backward (r->resample, dxs, n, r->cin, hi, wi, dx);
    }
  ddim_group_norm_backward (s->x, n, r->cin, (int) hwi, r->norm1.groups, eps, r->norm1.gamma,
                            r->norm1.beta, TRUE, d_t1i, d_t1i, ddim_back_grad (b, r->norm1.gamma),
                            ddim_back_grad (b, r->norm1.beta));
  add_into (dx, d_t1i, cin_ni);
  ddim_arena_release (A, mark);
}

void
ddim_resnet_jvp (DdimUNet *un, const DdimResnetLayer *r, const DdimUnitSave *s, int n, int hi,
                 int wi, const float *dx, float *dout, DdimArena *A)
{
  const DdimUNetConfig *c = &un->config;
  int h, w;
  ddim_resnet_out_size (r, hi, wi, &h, &w);
  gboolean resample = r->resample != DDIM_RESNET_SAME;
  gsize hw = (gsize) h * w, hwi = (gsize) hi * wi;
  float eps = (float) c->norm_eps;
  gsize cin_n = (gsize) n * r->cin * hw, cout_n = (gsize) n * r->cout * hw;
  gsize mark = ddim_arena_mark (A);

  float *dt1 = ddim_arena_alloc (A, cin_n);
  const float *dxs = dx;    /* the shortcut's tangent */
  if (!resample)
    ddim_group_norm_jvp (s->x, dx, n, r->cin, (int) hw, r->norm1.groups, eps, r->norm1.gamma,
                         r->norm1.beta, TRUE, dt1);
  else
    {
      /* Pooling and nearest upsampling are linear: their JVP is themselves. */
      float *full = ddim_arena_alloc (A, (gsize) n * r->cin * hwi);
      ddim_group_norm_jvp (s->x, dx, n, r->cin, (int) hwi, r->norm1.groups, eps, r->norm1.gamma,
                           r->norm1.beta, TRUE, full);
      resample_forward (r->resample, full, n, r->cin, hi, wi, dt1);
      float *dxr = ddim_arena_alloc (A, cin_n);
      resample_forward (r->resample, dx, n, r->cin, hi, wi, dxr);
      dxs = dxr;
    }
  float *dh1 = ddim_arena_alloc (A, cout_n);
  ddim_conv2d_jvp (dt1, n, r->cin, h, w, r->conv1.w, r->cout, 3, 1, 1, 1, dh1, A);

  float *dt2 = ddim_arena_alloc (A, cout_n);
  if (!c->scale_shift)
    ddim_group_norm_jvp (s->h1, dh1, n, r->cout, (int) hw, r->norm2.groups, eps, r->norm2.gamma,
                         r->norm2.beta, TRUE, dt2);
  else
    {
      /* v = gn(h1) (1 + scale) + shift, scale and shift constants (time). */
      float *un2 = ddim_arena_alloc (A, cout_n);
      ddim_group_norm_forward (s->h1, n, r->cout, (int) hw, r->norm2.groups, eps, r->norm2.gamma,
                               r->norm2.beta, FALSE, un2);
      ddim_group_norm_jvp (s->h1, dh1, n, r->cout, (int) hw, r->norm2.groups, eps, r->norm2.gamma,
                           r->norm2.beta, FALSE, dt2);
      for (int b = 0; b < n; b++)
        for (int ch = 0; ch < r->cout; ch++)
          {
            float scale = s->tp[(gsize) b * 2 * r->cout + ch];
            float shift = s->tp[(gsize) b * 2 * r->cout + r->cout + ch];
            gsize off = ((gsize) b * r->cout + ch) * hw;
            for (gsize i = 0; i < hw; i++)
              {
                un2[off + i] = un2[off + i] * (1.f + scale) + shift;
                dt2[off + i] *= 1.f + scale;
              }
          }
      ddim_silu_jvp (un2, dt2, dt2, cout_n);
    }

  if (r->shortcut.w)
    ddim_conv2d_jvp (dxs, n, r->cin, h, w, r->shortcut.w, r->cout, 1, 1, 0, 0, dout, A);
  else
    memcpy (dout, dxs, cout_n * sizeof (float));
  ddim_conv2d_forward_accumulate (dt2, n, r->cout, h, w, r->conv2.w, r->cout, 3, 1, 1, 1, dout, A);
  if (r->output_scale != 1.f)
    for (gsize i = 0; i < cout_n; i++)
      dout[i] /= r->output_scale;
  ddim_arena_release (A, mark);
}
