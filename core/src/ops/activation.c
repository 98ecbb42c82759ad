/* SiLU (swish). */
#include <math.h>

#include "ops/ops.h"

void
ddim_silu_forward (float *x, gsize count)
{
  for (gsize i = 0; i < count; i++)
    x[i] = x[i] / (1.f + expf (-x[i]));
}

/* dx = dy * silu'(x), silu'(x) = s (1 + x (1 - s)), s = sigmoid (x).
 * Elementwise: @dx may equal @dy or @x. */
void
ddim_silu_backward (const float *x, const float *dy, float *dx, gsize count)
{
  for (gsize i = 0; i < count; i++)
    {
      float v = x[i];
      float s = 1.f / (1.f + expf (-v));
      dx[i] = dy[i] * s * (1.f + v * (1.f - s));
    }
}

void
ddim_silu_jvp (const float *x, const float *dx, float *dy, gsize count)
{
  ddim_silu_backward (x, dx, dy, count);
}
