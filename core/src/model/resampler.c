/* A block's downsampler or upsampler, in its three kinds: a conv
 * (strided down, nearest + conv up; diffusers Downsample2D/Upsample2D),
 * pooling without parameters (2x2 average down, nearest up; ermongroup
 * resamp_with_conv false), or a resampling resnet (guided-diffusion
 * resblock_updown). Forward, backward and JVP side by side. */
#include <string.h>

#include "model/unet-private.h"

void
ddim_resampler_out_size (const DdimUNet *u, const DdimBlock *blk, gboolean down, int h, int w,
                         int *oh, int *ow)
{
  if (!down)
    {
      *oh = 2 * h;
      *ow = 2 * w;
    }
  else if (blk->resample_kind == DDIM_RESAMPLER_CONV)
    {
      /* downsample_padding 0: pad right and bottom only (diffusers F.pad). */
      *oh = ddim_conv2d_out_size (h, 3, 2, u->config.downsample_padding, 1);
      *ow = ddim_conv2d_out_size (w, 3, 2, u->config.downsample_padding, 1);
    }
  else
    {
      *oh = h / 2;
      *ow = w / 2;
    }
}

float *
ddim_resampler_forward (DdimRun *run, const DdimBlock *blk, gboolean down, const float *x, int h,
                        int w, DdimUnitSave *save)
{
  DdimArena *A = run->scratch;
  int n = run->n, c = blk->channels, oh, ow;
  ddim_resampler_out_size (run->u, blk, down, h, w, &oh, &ow);
  gsize count = (gsize) n * c * oh * ow;
  float *out;
  switch (blk->resample_kind)
    {
    case DDIM_RESAMPLER_RESNET:
      return ddim_resnet_forward (run, &blk->resample_resnet, x, h, w, save);
    case DDIM_RESAMPLER_POOL:
      out = ddim_run_keep_alloc (run, count);
      if (down)
        ddim_avgpool2x_forward (x, n, c, h, w, out);
      else
        ddim_upsample_nearest2x_forward (x, n, c, h, w, out);
      break;
    case DDIM_RESAMPLER_CONV:
    default:
      if (down)
        {
          out = ddim_run_keep_alloc (run, count);
          ddim_conv2d_forward (x, n, c, h, w, blk->resample.w, blk->resample.b, c, 3, 2,
                               run->u->config.downsample_padding, 1, out, A);
        }
      else
        {
          /* The upsampled input is scratch below the kept output; callers
           * relocate the output down over it on the fast path. */
          float *up = ddim_arena_alloc (A, count);
          ddim_upsample_nearest2x_forward (x, n, c, h, w, up);
          out = ddim_run_keep_alloc (run, count);
          ddim_conv2d_forward (up, n, c, oh, ow, blk->resample.w, blk->resample.b, c, 3, 1, 1, 1,
                               out, A);
        }
      break;
    }
  if (save)
    {
      memset (save, 0, sizeof *save);
      save->x = x;
      save->out = out;
    }
  return out;
}

void
ddim_resampler_backward (DdimBackRun *b, const DdimBlock *blk, gboolean down,
                         const DdimUnitSave *s, int h, int w, float *dout, float *dx)
{
  DdimArena *A = b->scratch;
  int n = b->n, c = blk->channels, oh, ow;
  ddim_resampler_out_size (b->u, blk, down, h, w, &oh, &ow);
  switch (blk->resample_kind)
    {
    case DDIM_RESAMPLER_RESNET:
      ddim_resnet_backward (b, &blk->resample_resnet, s, h, w, dout, dx);
      return;
    case DDIM_RESAMPLER_POOL:
      if (down)
        ddim_avgpool2x_backward (dout, n, c, h, w, dx);
      else
        ddim_upsample_nearest2x_backward (dout, n, c, h, w, dx);
      return;
    case DDIM_RESAMPLER_CONV:
    default:
      if (down)
        ddim_conv2d_backward (s->x, n, c, h, w, blk->resample.w, c, 3, 2,
                              b->u->config.downsample_padding, 1, dout, dx,
                              ddim_back_grad (b, blk->resample.w),
                              ddim_back_grad (b, blk->resample.b), A);
      else
        {
          /* o = conv(nearest2x(x)), at 2h x 2w. */
          gsize mark = ddim_arena_mark (A);
          gsize count = (gsize) n * c * oh * ow;
          float *up = ddim_arena_alloc (A, count);
          ddim_upsample_nearest2x_forward (s->x, n, c, h, w, up);
          float *d_up = ddim_arena_alloc (A, count);
          ddim_conv2d_backward (up, n, c, oh, ow, blk->resample.w, c, 3, 1, 1, 1, dout, d_up,
                                ddim_back_grad (b, blk->resample.w),
                                ddim_back_grad (b, blk->resample.b), A);
          ddim_upsample_nearest2x_backward (d_up, n, c, h, w, dx);
          ddim_arena_release (A, mark);
        }
      return;
    }
}

void
ddim_resampler_jvp (DdimUNet *u, const DdimBlock *blk, gboolean down, const DdimUnitSave *s,
                    int n, int h, int w, const float *dx, float *dout, DdimArena *A)
{
  int c = blk->channels, oh, ow;
  ddim_resampler_out_size (u, blk, down, h, w, &oh, &ow);
  switch (blk->resample_kind)
    {
    case DDIM_RESAMPLER_RESNET:
      ddim_resnet_jvp (u, &blk->resample_resnet, s, n, h, w, dx, dout, A);
      return;
    case DDIM_RESAMPLER_POOL:
      if (down)
        ddim_avgpool2x_forward (dx, n, c, h, w, dout);
      else
        ddim_upsample_nearest2x_forward (dx, n, c, h, w, dout);
      return;
    case DDIM_RESAMPLER_CONV:
    default:
      if (down)
        ddim_conv2d_jvp (dx, n, c, h, w, blk->resample.w, c, 3, 2, u->config.downsample_padding,
                         1, dout, A);
      else
        {
          gsize mark = ddim_arena_mark (A);
          float *up = ddim_arena_alloc (A, (gsize) n * c * oh * ow);
          ddim_upsample_nearest2x_forward (dx, n, c, h, w, up);
          ddim_conv2d_jvp (up, n, c, oh, ow, blk->resample.w, c, 3, 1, 1, 1, dout, A);
          ddim_arena_release (A, mark);
        }
      return;
    }
}

static double
conv_macs (const DdimConvLayer *l, int oh, int ow)
{
  return (double) l->cout * l->cin * l->k * l->k * oh * ow;
}

double
ddim_resampler_macs (const DdimUNet *u, const DdimBlock *blk, gboolean down, int h, int w)
{
  int oh, ow;
  ddim_resampler_out_size (u, blk, down, h, w, &oh, &ow);
  switch (blk->resample_kind)
    {
    case DDIM_RESAMPLER_RESNET:
      {
        const DdimResnetLayer *r = &blk->resample_resnet;
        double m = conv_macs (&r->conv1, oh, ow) + conv_macs (&r->conv2, oh, ow)
                   + (double) r->temb_proj.out * r->temb_proj.in;
        if (r->shortcut.w)
          m += conv_macs (&r->shortcut, oh, ow);
        return m;
      }
    case DDIM_RESAMPLER_POOL:
      return 0;
    case DDIM_RESAMPLER_CONV:
    default:
      return conv_macs (&blk->resample, oh, ow);
    }
}
