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
