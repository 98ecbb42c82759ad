/* Group normalisation (with an optional fused SiLU). Statistics in double so
 * that large groups (e.g. 4 x 256 x 256 values) keep float32 accuracy. */
#include <math.h>

#include "ops/ops.h"

void
ddim_group_norm_forward (const float *x, int n, int c, int hw, int groups, float eps,
                         const float *gamma, const float *beta, gboolean silu, float *y)
{
  int cpg = c / groups;
  gsize count = (gsize) cpg * hw;
  for (int b = 0; b < n; b++)
    for (int g = 0; g < groups; g++)
      {
        gsize off = ((gsize) b * c + (gsize) g * cpg) * hw;
        const float *xg = x + off;
        double sum = 0;
        for (gsize i = 0; i < count; i++)
          sum += xg[i];
        double mean = sum / count;
        double sq = 0;
        for (gsize i = 0; i < count; i++)
          {
            double d = xg[i] - mean;
            sq += d * d;
          }
        float inv = (float) (1.0 / sqrt (sq / count + eps));
        float fmean = (float) mean;
        for (int ci = 0; ci < cpg; ci++)
          {
            int ch = g * cpg + ci;
            float scale = inv * gamma[ch];
            float shift = beta[ch] - fmean * scale;
            const float *xs = xg + (gsize) ci * hw;
            float *ys = y + off + (gsize) ci * hw;
            if (silu)
              for (int i = 0; i < hw; i++)
                {
                  float v = xs[i] * scale + shift;
                  ys[i] = v / (1.f + expf (-v));
                }
            else
              for (int i = 0; i < hw; i++)
                ys[i] = xs[i] * scale + shift;
          }
      }
}
