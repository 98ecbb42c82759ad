/* Nearest-neighbour upsampling. (Downsampling is a strided conv2d.) */
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
