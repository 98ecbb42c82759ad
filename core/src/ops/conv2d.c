/* 2-D convolution as GEMM: im2col over bands of output rows, so the column
 * buffer stays small (cache-sized) whatever the image size. */
#include <cblas.h>
#include <string.h>

#include "ops/ops.h"

/* Target size of one column band, in floats (4 MiB: stays in L3). */
#define COL_BAND_FLOATS (1u << 20)

int
ddim_conv2d_out_size (int in, int k, int stride, int pad_tl, int pad_br)
{
  return (in + pad_tl + pad_br - k) / stride + 1;
}

/* Columns for output rows [oy0, oy0 + rows) of one image: col[kk, r*ow + ox]. */
static void
im2col_band (const float *x, int cin, int h, int w, int k, int stride, int pad,
             int oy0, int rows, int ow, float *col)
{
  gsize band = (gsize) rows * ow;
  for (int ci = 0; ci < cin; ci++)
    for (int ky = 0; ky < k; ky++)
      for (int kx = 0; kx < k; kx++)
        {
          float *dst = col + ((gsize) (ci * k + ky) * k + kx) * band;
          const float *plane = x + (gsize) ci * h * w;
          for (int r = 0; r < rows; r++)
            {
              int iy = (oy0 + r) * stride - pad + ky;
              float *d = dst + (gsize) r * ow;
              if (iy < 0 || iy >= h)
                {
                  memset (d, 0, sizeof (float) * ow);
                  continue;
                }
              const float *src = plane + (gsize) iy * w;
              if (stride == 1)
                {
                  /* ix = ox - pad + kx: zero the edges, copy the middle. */
                  int lo = pad - kx, hi = w + pad - kx; /* valid ox in [lo, hi) */
                  if (lo < 0) lo = 0;
                  if (hi > ow) hi = ow;
                  for (int ox = 0; ox < lo && ox < ow; ox++)
                    d[ox] = 0.f;
                  if (hi > lo)
                    memcpy (d + lo, src + lo - pad + kx, sizeof (float) * (hi - lo));
                  for (int ox = hi > lo ? hi : (lo < ow ? lo : ow); ox < ow; ox++)
                    d[ox] = 0.f;
                }
              else
                for (int ox = 0; ox < ow; ox++)
                  {
                    int ix = ox * stride - pad + kx;
                    d[ox] = (ix >= 0 && ix < w) ? src[ix] : 0.f;
                  }
            }
        }
}

void
ddim_conv2d_forward (const float *x, int n, int cin, int h, int w,
                     const float *weight, const float *bias, int cout, int k,
                     int stride, int pad_tl, int pad_br, float *y, DdimArena *arena)
{
  int oh = ddim_conv2d_out_size (h, k, stride, pad_tl, pad_br);
  int ow = ddim_conv2d_out_size (w, k, stride, pad_tl, pad_br);
  gsize P = (gsize) oh * ow;
  int K = cin * k * k;
  gboolean pointwise = (k == 1 && stride == 1 && pad_tl == 0 && pad_br == 0);

  int band_rows = (int) (COL_BAND_FLOATS / ((gsize) K * ow));
  if (band_rows < 1)
    band_rows = 1;
  if (band_rows > oh)
    band_rows = oh;
  gsize mark = ddim_arena_mark (arena);
  float *col = pointwise ? NULL : ddim_arena_alloc (arena, (gsize) K * band_rows * ow);

  for (int b = 0; b < n; b++)
    {
      const float *xb = x + (gsize) b * cin * h * w;
      float *yb = y + (gsize) b * cout * P;
      for (int co = 0; co < cout; co++)
        {
          float v = bias ? bias[co] : 0.f;
          float *row = yb + (gsize) co * P;
          for (gsize p = 0; p < P; p++)
            row[p] = v;
        }
      if (pointwise)
        {
          cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int) P, cin,
                       1.f, weight, cin, xb, (int) P, 1.f, yb, (int) P);
          continue;
        }
      for (int oy0 = 0; oy0 < oh; oy0 += band_rows)
        {
          int rows = MIN (band_rows, oh - oy0);
          int cols = rows * ow;
          im2col_band (xb, cin, h, w, k, stride, pad_tl, oy0, rows, ow, col);
          cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, cols, K,
                       1.f, weight, K, col, cols, 1.f, yb + (gsize) oy0 * ow, (int) P);
        }
    }
  ddim_arena_release (arena, mark);
}
