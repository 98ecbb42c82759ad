/* SiLU (swish). */
#include <math.h>

#include "ops/ops.h"

void
ddim_silu_forward (float *x, gsize count)
{
  for (gsize i = 0; i < count; i++)
    x[i] = x[i] / (1.f + expf (-x[i]));
}
