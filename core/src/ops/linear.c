/* Fully connected layer in PyTorch's layout (weight [out, in]). */
#include <cblas.h>

#include "ops/ops.h"

void
ddim_linear_forward (const float *x, int n, int in, const float *weight,
                     const float *bias, int out, float *y)
{
  for (int b = 0; b < n; b++)
    for (int o = 0; o < out; o++)
      y[(gsize) b * out + o] = bias ? bias[o] : 0.f;
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in,
               1.f, x, in, weight, in, 1.f, y, out);
}
