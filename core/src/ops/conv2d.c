/* 2-D convolution as GEMM: im2col over bands of output rows, so the column
 * buffer stays small (cache-sized) whatever the image size. */
#include <cblas.h>
#include <string.h>

#include "ops/ops.h"
#include "ops/parallel.h"
#include "ops/winograd.h"

/* Target size of one column band, in floats (4 MiB: stays in L3). */
#define COL_BAND_FLOATS (1u << 20)

int
ddim_conv2d_out_size (int in, int k, int stride, int pad_tl, int pad_br)
{
  return (in + pad_tl + pad_br - k) / stride + 1;
}

/* Columns for output rows [oy0, oy0 + rows) of one image, input channels
 * [c0, c1): col[kk * ld + r*ow + ox] (ld >= rows * ow: several images can
 * share one column matrix side by side). */
static void
im2col_band_channels (const float *x, int c0, int c1, int h, int w, int k, int stride, int pad,
                      int oy0, int rows, int ow, float *col, gsize ld)
{
  gsize band = ld;
  for (int ci = c0; ci < c1; ci++)
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

typedef struct {
  const float *x;
  int h, w, k, stride, pad, oy0, rows, ow;
  float *col;
  gsize ld;
} Im2colJob;

static void
im2col_range (gsize begin, gsize end, gpointer data)
{
  Im2colJob *j = data;
  im2col_band_channels (j->x, (int) begin, (int) end, j->h, j->w, j->k, j->stride, j->pad, j->oy0,
                        j->rows, j->ow, j->col, j->ld);
}

/* All input channels, split across the arena's threads when large. */
static void
im2col_band_ld (DdimArena *arena, const float *x, int cin, int h, int w, int k, int stride,
                int pad, int oy0, int rows, int ow, float *col, gsize ld)
{
  Im2colJob job = { x, h, w, k, stride, pad, oy0, rows, ow, col, ld };
  /* Each channel writes k*k*rows*ow floats; below ~64k floats a thread
   * hand-off costs more than it saves. */
  gsize per_channel = (gsize) k * k * rows * ow;
  ddim_parallel_for (arena->parallel, cin, MAX (1, 65536 / per_channel), im2col_range, &job);
}

static void
im2col_band (DdimArena *arena, const float *x, int cin, int h, int w, int k, int stride, int pad,
             int oy0, int rows, int ow, float *col)
{
  im2col_band_ld (arena, x, cin, h, w, k, stride, pad, oy0, rows, ow, col, (gsize) rows * ow);
}

/* Small images in a batch (training): when a whole image's columns fit in
 * a band, up to this many floats of columns of several images go into one
 * GEMM, so the GEMMs are wide instead of one small call per image. */
#define GROUP_COL_FLOATS (1u << 22)

static int
images_per_group (int n, int K, gsize P)
{
  gsize g = GROUP_COL_FLOATS / ((gsize) K * P);
  return (int) CLAMP (g, 1, (gsize) n);
}

/* y (+)= conv(x) (+ bias): with @accumulate, @y already holds values to add
 * to and @bias must be folded in by the caller. */
static void
conv2d_run (const float *x, int n, int cin, int h, int w, const float *weight, const float *bias,
            int cout, int k, int stride, int pad_tl, int pad_br, float *y, gboolean accumulate,
            DdimArena *arena)
{
  /* 3x3 "same" convolutions with enough channels: Winograd. The first
   * and last layers (3 channels) gain nothing from it. */
  int tile = ddim_winograd_tile_for (h, w);
  if (k == 3 && stride == 1 && pad_tl == 1 && pad_br == 1 && tile > 0 && cin >= 16
      && cout >= 16 && !arena->im2col_only)
    {
      ddim_winograd_conv3x3 (x, n, cin, h, w, weight, accumulate ? NULL : bias, cout, y,
                             accumulate, tile, arena);
      return;
    }
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
  int group = (!pointwise && band_rows == oh && n > 1) ? images_per_group (n, K, P) : 1;
  if (group > 1)
    {
      /* [K, g*P] columns -> [cout, g*P] products -> scattered into NCHW. */
      float *gcol = ddim_arena_alloc (arena, (gsize) K * group * P);
      float *gy = ddim_arena_alloc (arena, (gsize) cout * group * P);
      for (int b0 = 0; b0 < n; b0 += group)
        {
          int g = MIN (group, n - b0);
          gsize ld = (gsize) g * P;
          for (int j = 0; j < g; j++)
            im2col_band_ld (arena, x + (gsize) (b0 + j) * cin * h * w, cin, h, w, k, stride,
                            pad_tl, 0, oh, ow, gcol + (gsize) j * P, ld);
          ddim_parallel_sgemm (arena->parallel, cout, (int) ld, K, 1.f, weight, K, gcol, (int) ld,
                               0.f, gy, (int) ld);
          for (int j = 0; j < g; j++)
            for (int co = 0; co < cout; co++)
              {
                const float *src = gy + (gsize) co * ld + (gsize) j * P;
                float *dst = y + ((gsize) (b0 + j) * cout + co) * P;
                if (accumulate)
                  for (gsize p = 0; p < P; p++)
                    dst[p] += src[p];
                else
                  {
                    float bv = bias ? bias[co] : 0.f;
                    for (gsize p = 0; p < P; p++)
                      dst[p] = src[p] + bv;
                  }
              }
        }
      ddim_arena_release (arena, mark);
      return;
    }
  float *col = pointwise ? NULL : ddim_arena_alloc (arena, (gsize) K * band_rows * ow);
  float beta = 1.f;

  for (int b = 0; b < n; b++)
    {
      const float *xb = x + (gsize) b * cin * h * w;
      float *yb = y + (gsize) b * cout * P;
      if (!accumulate && bias)
        ddim_parallel_fill_rows (arena->parallel, yb, cout, P, bias, NULL);
      else if (!accumulate)
        beta = 0.f;
      if (pointwise)
        {
          ddim_parallel_sgemm (arena->parallel, cout, (int) P, cin, 1.f, weight, cin, xb, (int) P,
                               beta, yb, (int) P);
          continue;
        }
      for (int oy0 = 0; oy0 < oh; oy0 += band_rows)
        {
          int rows = MIN (band_rows, oh - oy0);
          int cols = rows * ow;
          im2col_band (arena, xb, cin, h, w, k, stride, pad_tl, oy0, rows, ow, col);
          ddim_parallel_sgemm (arena->parallel, cout, cols, K, 1.f, weight, K, col, cols, beta,
                               yb + (gsize) oy0 * ow, (int) P);
        }
    }
  ddim_arena_release (arena, mark);
}

void
ddim_conv2d_forward (const float *x, int n, int cin, int h, int w,
                     const float *weight, const float *bias, int cout, int k,
                     int stride, int pad_tl, int pad_br, float *y, DdimArena *arena)
{
  conv2d_run (x, n, cin, h, w, weight, bias, cout, k, stride, pad_tl, pad_br, y, FALSE, arena);
}

void
ddim_conv2d_forward_accumulate (const float *x, int n, int cin, int h, int w,
                                const float *weight, int cout, int k, int stride, int pad_tl,
                                int pad_br, float *y, DdimArena *arena)
{
  conv2d_run (x, n, cin, h, w, weight, NULL, cout, k, stride, pad_tl, pad_br, y, TRUE, arena);
}

/* Range [*lo, *hi) of output columns ox whose input column
 * ix = ox * stride - pad + kx lies in [0, w). */
static inline void
valid_ox (int w, int ow, int stride, int pad, int kx, int *lo, int *hi)
{
  int a = pad - kx;             /* need ox * stride >= a */
  int b = w - 1 + pad - kx;     /* need ox * stride <= b */
  int l = a > 0 ? (a + stride - 1) / stride : 0;
  int u = b >= 0 ? b / stride + 1 : 0;
  *lo = MIN (l, ow);
  *hi = MIN (u, ow);
  if (*hi < *lo)
    *hi = *lo;
}

/* Adjoint of im2col_band: dx[ci, iy, ix] += dcol[kk, r*ow + ox]. */
static void
col2im_band_ld (const float *dcol, int cin, int h, int w, int k, int stride, int pad,
                int oy0, int rows, int ow, float *dx, gsize ld)
{
  gsize band = ld;
  for (int ci = 0; ci < cin; ci++)
    for (int ky = 0; ky < k; ky++)
      for (int kx = 0; kx < k; kx++)
        {
          const float *src = dcol + ((gsize) (ci * k + ky) * k + kx) * band;
          float *plane = dx + (gsize) ci * h * w;
          int lo, hi;
          valid_ox (w, ow, stride, pad, kx, &lo, &hi);
          if (hi <= lo)
            continue;
          for (int r = 0; r < rows; r++)
            {
              int iy = (oy0 + r) * stride - pad + ky;
              if (iy < 0 || iy >= h)
                continue;
              const float *s = src + (gsize) r * ow;
              /* ix = ox * stride + base, >= 0 for ox in [lo, hi). */
              gssize base = (gssize) iy * w - pad + kx;
              if (stride == 1)
                {
                  float *d = plane + (base + lo);
                  const float *sl = s + lo;
                  for (int i = 0; i < hi - lo; i++)
                    d[i] += sl[i];
                }
              else
                for (int ox = lo; ox < hi; ox++)
                  plane[base + (gssize) ox * stride] += s[ox];
            }
        }
}

static void
col2im_band (const float *dcol, int cin, int h, int w, int k, int stride, int pad,
             int oy0, int rows, int ow, float *dx)
{
  col2im_band_ld (dcol, cin, h, w, k, stride, pad, oy0, rows, ow, dx, (gsize) rows * ow);
}

/* Backward for groups of whole images (see images_per_group). */
static void
conv2d_backward_grouped (const float *x, int n, int cin, int h, int w, const float *weight,
                         int cout, int k, int stride, int pad, int oh, int ow, const float *dy,
                         float *dx, float *dweight, int group, DdimArena *arena)
{
  gsize P = (gsize) oh * ow, HW = (gsize) h * w;
  int K = cin * k * k;
  gsize mark = ddim_arena_mark (arena);
  float *gcol = ddim_arena_alloc (arena, (gsize) K * group * P);
  float *gdy = ddim_arena_alloc (arena, (gsize) cout * group * P);
  for (int b0 = 0; b0 < n; b0 += group)
    {
      int g = MIN (group, n - b0);
      gsize ld = (gsize) g * P;
      /* dy of the group side by side: [cout, g*P]. */
      for (int j = 0; j < g; j++)
        for (int co = 0; co < cout; co++)
          memcpy (gdy + (gsize) co * ld + (gsize) j * P, dy + ((gsize) (b0 + j) * cout + co) * P,
                  P * sizeof (float));
      if (dweight)
        {
          for (int j = 0; j < g; j++)
            im2col_band_ld (arena, x + (gsize) (b0 + j) * cin * HW, cin, h, w, k, stride, pad, 0,
                            oh, ow, gcol + (gsize) j * P, ld);
          cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, cout, K, (int) ld, 1.f, gdy,
                       (int) ld, gcol, (int) ld, 1.f, dweight, K);
        }
      if (dx)
        {
          cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, K, (int) ld, cout, 1.f, weight, K,
                       gdy, (int) ld, 0.f, gcol, (int) ld);
          for (int j = 0; j < g; j++)
            {
              float *dxb = dx + (gsize) (b0 + j) * cin * HW;
              memset (dxb, 0, sizeof (float) * cin * HW);
              col2im_band_ld (gcol + (gsize) j * P, cin, h, w, k, stride, pad, 0, oh, ow, dxb, ld);
            }
        }
    }
  ddim_arena_release (arena, mark);
}

void
ddim_conv2d_backward_band (const float *x, int n, int cin, int h, int w,
                           const float *weight, int cout, int k, int stride,
                           int pad_tl, int pad_br, const float *dy, float *dx,
                           float *dweight, float *dbias, int band_rows, DdimArena *arena)
{
  g_return_if_fail (n >= 0 && cin > 0 && cout > 0 && k > 0 && stride > 0);
  g_return_if_fail (dy != NULL);
  g_return_if_fail (dx == NULL || weight != NULL);
  g_return_if_fail (dweight == NULL || x != NULL);

  int oh = ddim_conv2d_out_size (h, k, stride, pad_tl, pad_br);
  int ow = ddim_conv2d_out_size (w, k, stride, pad_tl, pad_br);
  gsize P = (gsize) oh * ow;
  gsize HW = (gsize) h * w;
  int K = cin * k * k;
  gboolean pointwise = (k == 1 && stride == 1 && pad_tl == 0 && pad_br == 0);

  if (dbias)
    for (int b = 0; b < n; b++)
      for (int co = 0; co < cout; co++)
        {
          const float *row = dy + ((gsize) b * cout + co) * P;
          double s = 0;
          for (gsize p = 0; p < P; p++)
            s += row[p];
          dbias[co] += (float) s;
        }
  if (!dx && !dweight)
    return;

  if (band_rows <= 0)
    band_rows = (int) (COL_BAND_FLOATS / ((gsize) K * ow));
  if (band_rows < 1)
    band_rows = 1;
  if (band_rows > oh)
    band_rows = oh;
  if (!pointwise && band_rows == oh && n > 1 && images_per_group (n, K, P) > 1)
    {
      conv2d_backward_grouped (x, n, cin, h, w, weight, cout, k, stride, pad_tl, oh, ow, dy, dx,
                               dweight, images_per_group (n, K, P), arena);
      return;
    }
  gsize mark = ddim_arena_mark (arena);
  float *col = pointwise ? NULL : ddim_arena_alloc (arena, (gsize) K * band_rows * ow);

  for (int b = 0; b < n; b++)
    {
      const float *dyb = dy + (gsize) b * cout * P;
      const float *xb = x ? x + (gsize) b * cin * HW : NULL;
      float *dxb = dx ? dx + (gsize) b * cin * HW : NULL;
      if (pointwise)
        {
          if (dweight)   /* dW[cout, cin] += dy[cout, P] x[cin, P]^T */
            cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, cout, cin, (int) P,
                         1.f, dyb, (int) P, xb, (int) P, 1.f, dweight, cin);
          if (dxb)       /* dx[cin, P] = W^T dy */
            cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, cin, (int) P, cout,
                         1.f, weight, cin, dyb, (int) P, 0.f, dxb, (int) P);
          continue;
        }
      if (dxb)
        memset (dxb, 0, sizeof (float) * cin * HW);
      for (int oy0 = 0; oy0 < oh; oy0 += band_rows)
        {
          int rows = MIN (band_rows, oh - oy0);
          int cols = rows * ow;
          const float *dyband = dyb + (gsize) oy0 * ow;
          if (dweight)
            {
              /* dW[cout, K] += dy[cout, cols] col[K, cols]^T */
              im2col_band (arena, xb, cin, h, w, k, stride, pad_tl, oy0, rows, ow, col);
              cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, cout, K, cols,
                           1.f, dyband, (int) P, col, cols, 1.f, dweight, K);
            }
          if (dxb)
            {
              /* dcol[K, cols] = W^T dy, reusing the column buffer. */
              cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, K, cols, cout,
                           1.f, weight, K, dyband, (int) P, 0.f, col, cols);
              col2im_band (col, cin, h, w, k, stride, pad_tl, oy0, rows, ow, dxb);
            }
        }
    }
  ddim_arena_release (arena, mark);
}

void
ddim_conv2d_backward (const float *x, int n, int cin, int h, int w,
                      const float *weight, int cout, int k, int stride, int pad_tl, int pad_br,
                      const float *dy, float *dx, float *dweight, float *dbias, DdimArena *arena)
{
  ddim_conv2d_backward_band (x, n, cin, h, w, weight, cout, k, stride, pad_tl, pad_br,
                             dy, dx, dweight, dbias, 0, arena);
}

/* The convolution is linear in x: its JVP is the convolution of the
 * tangent, without the bias (a constant). */
void
ddim_conv2d_jvp (const float *dx, int n, int cin, int h, int w, const float *weight, int cout,
                 int k, int stride, int pad_tl, int pad_br, float *dy, DdimArena *arena)
{
  g_return_if_fail (dx != NULL && weight != NULL && dy != NULL && arena != NULL);
  conv2d_run (dx, n, cin, h, w, weight, NULL, cout, k, stride, pad_tl, pad_br, dy, FALSE, arena);
}
