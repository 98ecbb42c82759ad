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

/* dx[n, in] = dy[n, out] W;  dW[out, in] += dy^T x;  db += sum_n dy. */
void
ddim_linear_backward (const float *x, int n, int in, const float *weight, int out,
                      const float *dy, float *dx, float *dweight, float *dbias)
{
  g_return_if_fail (dy != NULL);
  g_return_if_fail (dx == NULL || weight != NULL);
  g_return_if_fail (dweight == NULL || x != NULL);
  if (n <= 0)
    return;
  if (dx)
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out,
                 1.f, dy, out, weight, in, 0.f, dx, in);
  if (dweight)
    cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n,
                 1.f, dy, out, x, in, 1.f, dweight, in);
  if (dbias)
    for (int b = 0; b < n; b++)
      for (int o = 0; o < out; o++)
        dbias[o] += dy[(gsize) b * out + o];
}

/* dy[n, out] = dx[n, in] W^T: the layer without its bias. */
void
ddim_linear_jvp (const float *dx, int n, int in, const float *weight, int out, float *dy)
{
  g_return_if_fail (dx != NULL && weight != NULL && dy != NULL);
  if (n <= 0)
    return;
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in,
               1.f, dx, in, weight, in, 0.f, dy, out);
}
