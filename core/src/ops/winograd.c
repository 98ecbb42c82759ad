/* Winograd F(m x m, 3 x 3) convolution on top of the BLAS's sgemm.
 *
 * Per chunk of tile rows (over the whole batch, so small images still give
 * wide GEMMs): the input transform fills V[xi][cin][tiles], alpha^2 GEMMs
 * (spread over the arena's threads, one BLAS thread each) give
 * M[xi][cout][tiles] = U[xi] V[xi], and the output transform scatters the
 * tiles into y. Every transform is written as small matrices applied to
 * rows of tiles, so the inner loops run over contiguous tiles (SIMD). The
 * weights are transformed on each call: the op keeps no state, so nothing
 * can go stale when the weights change (training, fitting), and at the
 * sizes where Winograd is used this costs a few percent of the GEMMs.
 *
 * Interpolation points: F(2,3) uses 0, +-1 (Lavin & Gray); F(4,3) uses
 * 0, +-sqrt(2), +-sqrt(2)/2, which keeps the float32 error about half that
 * of the textbook 0, +-1, +-2 set (docs/fast-conv-notes.md: 1.0-1.5e-6
 * relative against 2-3e-6). */
#include <cblas.h>
#include <string.h>

#include "ops/parallel.h"
#include "ops/winograd.h"

/* Hot loops over tiles: vectorised, with AVX2 / AVX-512 versions chosen
 * at run time where the toolchain can (the build is for any x86-64). */
#pragma GCC optimize ("O3")
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SIMD_CLONES __attribute__ ((target_clones ("arch=x86-64-v4", "avx2", "default")))
#else
#define SIMD_CLONES
#endif

#define S2 1.41421356237309504880f   /* sqrt(2) */
#define H2 0.70710678118654752440f   /* sqrt(2)/2 */

typedef struct {
  int          m, a;   /* output tile, input tile (m + 2) */
  const float *bt;     /* a x a:  V = B^T d B */
  const float *g;      /* a x 3:  U = G g G^T */
  const float *at;     /* m x a:  Y = A^T M A */
} WinoSpec;

static const float f23_bt[] = {
  1, 0, -1, 0,
  0, 1, 1, 0,
  0, -1, 1, 0,
  0, 1, 0, -1,
};
static const float f23_g[] = {
  1, 0, 0,
  0.5f, 0.5f, 0.5f,
  0.5f, -0.5f, 0.5f,
  0, 0, 1,
};
static const float f23_at[] = {
  1, 1, 1, 0,
  0, 1, -1, -1,
};

static const float f43_bt[] = {
  1, 0, -2.5f, 0, 1, 0,
  0, -S2, -2, H2, 1, 0,
  0, S2, -2, -H2, 1, 0,
  0, -H2, -0.5f, S2, 1, 0,
  0, H2, -0.5f, -S2, 1, 0,
  0, 1, 0, -2.5f, 0, 1,
};
static const float f43_g[] = {
  1, 0, 0,
  -2.f / 3, -S2 / 3, -1.f / 3,
  -2.f / 3, S2 / 3, -1.f / 3,
  1.f / 6, S2 / 6, 1.f / 3,
  1.f / 6, -S2 / 6, 1.f / 3,
  0, 0, 1,
};
static const float f43_at[] = {
  1, 1, 1, 1, 1, 0,
  0, H2, -H2, S2, -S2, 0,
  0, 0.5f, 0.5f, 2, 2, 0,
  0, S2 / 4, -S2 / 4, 2 * S2, -2 * S2, 1,
};

static const WinoSpec f23 = { 2, 4, f23_bt, f23_g, f23_at };
static const WinoSpec f43 = { 4, 6, f43_bt, f43_g, f43_at };

/* V floats per chunk (8 MiB): chunks of a few hundred tiles keep the
 * GEMMs efficient while the chunk's buffers stay near the cache. */
#define CHUNK_V_FLOATS (1u << 21)
/* Weight pairs (cout, cin) transformed per block. */
#define PAIR_BLOCK 256

int
ddim_winograd_tile_for (int h, int w)
{
  int s = MIN (h, w);
  return s >= 32 ? 4 : s >= 16 ? 2 : 0;
}

/* out[i][0..len) = sum_j mat[i][j] in[j][0..len) for i < rows, j < cols;
 * rows of @in @in_ld apart, of @out @out_ld apart. Zero coefficients are
 * skipped (the transforms are sparse). */
SIMD_CLONES static void
mat_apply (const float *mat, int rows, int cols, const float *restrict in, gsize in_ld,
           float *restrict out, gsize out_ld, int len)
{
  for (int i = 0; i < rows; i++)
    {
      float *restrict o = out + i * out_ld;
      gboolean first = TRUE;
      for (int j = 0; j < cols; j++)
        {
          float c = mat[i * cols + j];
          if (c == 0.f)
            continue;
          const float *restrict s = in + j * in_ld;
          if (first)
            for (int t = 0; t < len; t++)
              o[t] = c * s[t];
          else if (c == 1.f)
            for (int t = 0; t < len; t++)
              o[t] += s[t];
          else if (c == -1.f)
            for (int t = 0; t < len; t++)
              o[t] -= s[t];
          else
            for (int t = 0; t < len; t++)
              o[t] += c * s[t];
          first = FALSE;
        }
      if (first)
        memset (o, 0, sizeof (float) * len);
    }
}

typedef struct {
  const WinoSpec *s;
  const float    *x, *weight, *bias;
  float          *y, *u, *v, *mm;
  int             n, cin, cout, h, w;
  int             tiles_y, tiles_x;
  int             row0, rows;   /* the chunk: global tile rows (over the batch) */
  int             nt;           /* tiles in the chunk */
  gboolean        accumulate;
} Job;

/* U[xi][co * cin + ci] = (G g G^T)[xi], pairs [begin, end) in blocks. */
static void
weights_range (gsize begin, gsize end, gpointer data)
{
  const Job *j = data;
  const WinoSpec *s = j->s;
  int a = s->a;
  gsize us = (gsize) j->cout * j->cin;
  float *g = g_new (float, 9 * PAIR_BLOCK + 3 * a * PAIR_BLOCK);
  float *tmp = g + 9 * PAIR_BLOCK;
  for (gsize p0 = begin; p0 < end; p0 += PAIR_BLOCK)
    {
      int len = (int) MIN (PAIR_BLOCK, end - p0);
      const float *wp = j->weight + p0 * 9;
      for (int t = 0; t < len; t++)
        for (int kk = 0; kk < 9; kk++)
          g[kk * PAIR_BLOCK + t] = wp[t * 9 + kk];
      /* tmp[i][kx] = sum_ky G[i][ky] g[ky][kx] */
      for (int kx = 0; kx < 3; kx++)
        mat_apply (s->g, a, 3, g + kx * PAIR_BLOCK, 3 * PAIR_BLOCK, tmp + kx * PAIR_BLOCK,
                   3 * PAIR_BLOCK, len);
      /* U[i][jj] = sum_kx G[jj][kx] tmp[i][kx] */
      for (int i = 0; i < a; i++)
        mat_apply (s->g, a, 3, tmp + i * 3 * PAIR_BLOCK, PAIR_BLOCK, j->u + (gsize) i * a * us + p0,
                   us, len);
    }
  g_free (g);
}

/* V[xi][ci][T] for input channels [begin, end) over the chunk's tiles T. */
static void
input_range (gsize begin, gsize end, gpointer data)
{
  const Job *j = data;
  const WinoSpec *s = j->s;
  int a = s->a, m = s->m, tx = j->tiles_x, nt = j->nt, w = j->w, h = j->h;
  gsize vs = (gsize) j->cin * nt;
  int prow_len = tx * m + 2;
  float *d = g_new (float, (gsize) 2 * a * a * nt + prow_len);
  float *hb = d + (gsize) a * a * nt;
  float *prow = hb + (gsize) a * a * nt;
  for (gsize ci = begin; ci < end; ci++)
    {
      /* d[r][xk][T]: the tiles' a x a input patches, zero-padded. */
      for (int rr = 0; rr < j->rows; rr++)
        {
          int grow = j->row0 + rr;
          int b = grow / j->tiles_y, ty = grow % j->tiles_y;
          const float *plane = j->x + ((gsize) b * j->cin + ci) * h * w;
          for (int r = 0; r < a; r++)
            {
              int iy = ty * m - 1 + r;
              float *dst = d + (gsize) r * a * nt + (gsize) rr * tx;
              if (iy < 0 || iy >= h)
                {
                  for (int xk = 0; xk < a; xk++)
                    memset (dst + (gsize) xk * nt, 0, sizeof (float) * tx);
                  continue;
                }
              prow[0] = 0.f;
              memcpy (prow + 1, plane + (gsize) iy * w, sizeof (float) * w);
              for (int ix = w + 1; ix < prow_len; ix++)
                prow[ix] = 0.f;
              for (int xk = 0; xk < a; xk++)
                {
                  float *dk = dst + (gsize) xk * nt;
                  const float *src = prow + xk;
                  for (int t = 0; t < tx; t++)
                    dk[t] = src[t * m];
                }
            }
        }
      /* hb[r][k] = sum_xk B^T[k][xk] d[r][xk]; V[jj][k] = sum_r B^T[jj][r] hb[r][k]. */
      for (int r = 0; r < a; r++)
        mat_apply (s->bt, a, a, d + (gsize) r * a * nt, nt, hb + (gsize) r * a * nt, nt, nt);
      for (int k = 0; k < a; k++)
        mat_apply (s->bt, a, a, hb + (gsize) k * nt, (gsize) a * nt,
                   j->v + (gsize) k * vs + ci * nt, (gsize) a * vs, nt);
    }
  g_free (d);
}

/* M[xi] = U[xi] V[xi] for positions [begin, end). */
static void
gemm_range (gsize begin, gsize end, gpointer data)
{
  const Job *j = data;
  gsize us = (gsize) j->cout * j->cin, vs = (gsize) j->cin * j->nt, ms = (gsize) j->cout * j->nt;
  for (gsize xi = begin; xi < end; xi++)
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, j->cout, j->nt, j->cin, 1.f,
                 j->u + xi * us, j->cin, j->v + xi * vs, j->nt, 0.f, j->mm + xi * ms, j->nt);
}

/* Output channels [begin, end): y (+)= A^T M A over the chunk's tiles. */
static void
output_range (gsize begin, gsize end, gpointer data)
{
  const Job *j = data;
  const WinoSpec *s = j->s;
  int a = s->a, m = s->m, tx = j->tiles_x, nt = j->nt, w = j->w, h = j->h;
  gsize ms = (gsize) j->cout * nt;
  float *sb = g_new (float, (gsize) m * a * nt + (gsize) m * m * nt + (gsize) tx * m);
  float *o = sb + (gsize) m * a * nt;
  float *orow = o + (gsize) m * m * nt;
  for (gsize co = begin; co < end; co++)
    {
      /* sb[i][k] = sum_jj A^T[i][jj] M[jj][k]; o[i][x] = sum_k A^T[x][k] sb[i][k]. */
      for (int k = 0; k < a; k++)
        mat_apply (s->at, m, a, j->mm + (gsize) k * ms + co * nt, (gsize) a * ms,
                   sb + (gsize) k * nt, (gsize) a * nt, nt);
      for (int i = 0; i < m; i++)
        mat_apply (s->at, m, a, sb + (gsize) i * a * nt, nt, o + (gsize) i * m * nt, nt, nt);
      float bv = j->bias ? j->bias[co] : 0.f;
      for (int rr = 0; rr < j->rows; rr++)
        {
          int grow = j->row0 + rr;
          int b = grow / j->tiles_y, ty = grow % j->tiles_y;
          float *plane = j->y + ((gsize) b * j->cout + co) * h * w;
          for (int i = 0; i < m; i++)
            {
              int oy = ty * m + i;
              if (oy >= h)
                break;
              for (int x = 0; x < m; x++)
                {
                  const float *src = o + (gsize) (i * m + x) * nt + (gsize) rr * tx;
                  for (int t = 0; t < tx; t++)
                    orow[t * m + x] = src[t];
                }
              float *dst = plane + (gsize) oy * w;
              if (j->accumulate)
                for (int ox = 0; ox < w; ox++)
                  dst[ox] += orow[ox];
              else
                for (int ox = 0; ox < w; ox++)
                  dst[ox] = orow[ox] + bv;
            }
        }
    }
  g_free (sb);
}

void
ddim_winograd_conv3x3 (const float *x, int n, int cin, int h, int w, const float *weight,
                       const float *bias, int cout, float *y, gboolean accumulate, int m,
                       DdimArena *arena)
{
  g_return_if_fail (x != NULL && weight != NULL && y != NULL && arena != NULL);
  g_return_if_fail (m == 2 || m == 4);
  g_return_if_fail (!accumulate || bias == NULL);
  if (n <= 0 || cin <= 0 || cout <= 0 || h <= 0 || w <= 0)
    return;
  const WinoSpec *s = m == 4 ? &f43 : &f23;
  int a = s->a;
  int tiles_y = (h + m - 1) / m, tiles_x = (w + m - 1) / m;
  int total_rows = n * tiles_y;
  gsize per_row = (gsize) a * a * MAX (cin, cout) * tiles_x;
  int chunk_rows = (int) CLAMP (CHUNK_V_FLOATS / per_row, 1, (gsize) total_rows);
  gsize max_nt = (gsize) chunk_rows * tiles_x;
  DdimParallel *par = arena->parallel;

  gsize mark = ddim_arena_mark (arena);
  Job job = { s, x, weight, bias, y, NULL, NULL, NULL, n, cin, cout, h, w, tiles_y, tiles_x,
              0, 0, 0, accumulate };
  job.u = ddim_arena_alloc (arena, (gsize) a * a * cout * cin);
  job.v = ddim_arena_alloc (arena, (gsize) a * a * cin * max_nt);
  job.mm = ddim_arena_alloc (arena, (gsize) a * a * cout * max_nt);
  ddim_parallel_for (par, (gsize) cout * cin, 4 * PAIR_BLOCK, weights_range, &job);

  int saved = ddim_parallel_blas_begin (par);
  for (int row0 = 0; row0 < total_rows; row0 += chunk_rows)
    {
      job.row0 = row0;
      job.rows = MIN (chunk_rows, total_rows - row0);
      job.nt = job.rows * tiles_x;
      ddim_parallel_for (par, cin, 1, input_range, &job);
      ddim_parallel_for (par, (gsize) a * a, 1, gemm_range, &job);
      ddim_parallel_for (par, cout, 1, output_range, &job);
    }
  ddim_parallel_blas_end (saved);
  ddim_arena_release (arena, mark);
}
