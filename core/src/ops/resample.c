/* Nearest-neighbour upsampling and average pooling (downsampling with
 * a conv is a strided conv2d). */
#include <string.h>

#include "ops/ops.h"

void
ddim_upsample_nearest2x_forward (const float *x, int n, int c, int h, int w, float *y)
{
  int ow = 2 * w;
  for (gsize plane = 0; plane < (gsize) n * c; plane++)
    {
      const float *xp = x + plane * h * w;
      float *yp = y + plane * 4 * h * w;
      for (int i = 0; i < h; i++)
        {
          float *row = yp + (gsize) (2 * i) * ow;
          for (int j = 0; j < w; j++)
            row[2 * j] = row[2 * j + 1] = xp[(gsize) i * w + j];
          memcpy (row + ow, row, sizeof (float) * ow);
        }
    }
}

/* Adjoint of the 2x nearest upsampling: each dx is the sum of its 2x2 block. */
void
ddim_upsample_nearest2x_backward (const float *dy, int n, int c, int h, int w, float *dx)
{
  int ow = 2 * w;
  for (gsize plane = 0; plane < (gsize) n * c; plane++)
    {
      const float *yp = dy + plane * 4 * h * w;
      float *xp = dx + plane * h * w;
      for (int i = 0; i < h; i++)
        {
          const float *r0 = yp + (gsize) (2 * i) * ow;
          const float *r1 = r0 + ow;
          float *d = xp + (gsize) i * w;
          for (int j = 0; j < w; j++)
            d[j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
        }
    }
}

/* 2x2 average pooling, stride 2 (torch avg_pool2d(2)): y [n, c, h/2, w/2];
 * an odd last row or column is dropped, as torch floors the output size. */
void
ddim_avgpool2x_forward (const float *x, int n, int c, int h, int w, float *y)
{
  int oh = h / 2, ow = w / 2;
  for (gsize plane = 0; plane < (gsize) n * c; plane++)
    {
      const float *xp = x + plane * h * w;
      float *yp = y + plane * oh * ow;
      for (int i = 0; i < oh; i++)
        {
          const float *r0 = xp + (gsize) (2 * i) * w;
          const float *r1 = r0 + w;
          for (int j = 0; j < ow; j++)
            yp[(gsize) i * ow + j] = (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]) * 0.25f;
        }
    }
}

/* Adjoint of the 2x2 average pooling: each dx of a pooled block is a
 * quarter of its dy; dropped rows/columns get zero. dx is [n, c, h, w]. */
void
ddim_avgpool2x_backward (const float *dy, int n, int c, int h, int w, float *dx)
{
  int oh = h / 2, ow = w / 2;
  for (gsize plane = 0; plane < (gsize) n * c; plane++)
    {
      const float *yp = dy + plane * oh * ow;
      float *xp = dx + plane * h * w;
      if (oh * 2 != h || ow * 2 != w)
        memset (xp, 0, sizeof (float) * h * w);
      for (int i = 0; i < oh; i++)
        {
          float *r0 = xp + (gsize) (2 * i) * w;
          float *r1 = r0 + w;
          for (int j = 0; j < ow; j++)
            {
              float g = yp[(gsize) i * ow + j] * 0.25f;
              r0[2 * j] = r0[2 * j + 1] = r1[2 * j] = r1[2 * j + 1] = g;
            }
        }
    }
}
