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
#include <string.h>

#include "ops/packed-gemm.h"
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

/* The transforms, 1-D, applied to rows of tiles: element j of tile t is
 * in[j * ild + t * its], output k of tile t goes to out[k * old + t * ots].
 * Written out with their shared terms; the tile strides are constants in
 * each instance below so the loops vectorise. */
#define XFORM_LOOP(...) \
  for (int t = 0; t < len; t++) \
    { \
      const float *restrict i_ = in + (gsize) t * its; \
      float *restrict o_ = out + (gsize) t * ots; \
      __VA_ARGS__ \
    }
#define IN_(j) i_[(gsize) (j) * ild]
#define OUT_(k) o_[(gsize) (k) * old]

static inline void
f43_bt (const float *restrict in, gsize ild, int its, float *restrict out, gsize old, int ots,
        int len)
{
  XFORM_LOOP ({
    float d0 = IN_ (0), d1 = IN_ (1), d2 = IN_ (2), d3 = IN_ (3), d4 = IN_ (4), d5 = IN_ (5);
    float p = d4 - 2.f * d2, q = S2 * d1 - H2 * d3;
    float r = d4 - 0.5f * d2, v = S2 * d3 - H2 * d1;
    OUT_ (0) = d0 - 2.5f * d2 + d4;
    OUT_ (1) = p - q;
    OUT_ (2) = p + q;
    OUT_ (3) = r + v;
    OUT_ (4) = r - v;
    OUT_ (5) = d1 - 2.5f * d3 + d5;
  })
}

static inline void
f43_at (const float *restrict in, gsize ild, int its, float *restrict out, gsize old, int ots,
        int len)
{
  XFORM_LOOP ({
    float m0 = IN_ (0), m5 = IN_ (5);
    float a12 = IN_ (1) + IN_ (2), s12 = IN_ (1) - IN_ (2);
    float a34 = IN_ (3) + IN_ (4), s34 = IN_ (3) - IN_ (4);
    OUT_ (0) = m0 + a12 + a34;
    OUT_ (1) = H2 * s12 + S2 * s34;
    OUT_ (2) = 0.5f * a12 + 2.f * a34;
    OUT_ (3) = (S2 / 4) * s12 + (2 * S2) * s34 + m5;
  })
}

static inline void
f43_g (const float *restrict in, gsize ild, int its, float *restrict out, gsize old, int ots,
       int len)
{
  XFORM_LOOP ({
    float g0 = IN_ (0), g1 = IN_ (1), g2 = IN_ (2);
    float e = -2.f / 3 * g0 - 1.f / 3 * g2, f = 1.f / 6 * g0 + 1.f / 3 * g2;
    OUT_ (0) = g0;
    OUT_ (1) = e - (S2 / 3) * g1;
    OUT_ (2) = e + (S2 / 3) * g1;
    OUT_ (3) = f + (S2 / 6) * g1;
    OUT_ (4) = f - (S2 / 6) * g1;
    OUT_ (5) = g2;
  })
}

static inline void
f23_bt (const float *restrict in, gsize ild, int its, float *restrict out, gsize old, int ots,
        int len)
{
  XFORM_LOOP ({
    float d0 = IN_ (0), d1 = IN_ (1), d2 = IN_ (2), d3 = IN_ (3);
    OUT_ (0) = d0 - d2;
    OUT_ (1) = d1 + d2;
    OUT_ (2) = d2 - d1;
    OUT_ (3) = d1 - d3;
  })
}

static inline void
f23_at (const float *restrict in, gsize ild, int its, float *restrict out, gsize old, int ots,
        int len)
{
  XFORM_LOOP ({
    float m1 = IN_ (1), m2 = IN_ (2);
    OUT_ (0) = IN_ (0) + m1 + m2;
    OUT_ (1) = m1 - m2 - IN_ (3);
  })
}

static inline void
f23_g (const float *restrict in, gsize ild, int its, float *restrict out, gsize old, int ots,
       int len)
{
  XFORM_LOOP ({
    float g0 = IN_ (0), g1 = IN_ (1), g2 = IN_ (2);
    OUT_ (0) = g0;
    OUT_ (1) = 0.5f * (g0 + g1 + g2);
    OUT_ (2) = 0.5f * (g0 - g1 + g2);
    OUT_ (3) = g2;
  })
}

#undef IN_
#undef OUT_
#undef XFORM_LOOP

typedef void (*XformFunc) (const float *in, gsize ild, float *out, gsize old, int len);

/* Instances: _v on contiguous tiles, _h reading (bt) or writing (at) the
 * tiles of an image row, m apart. */
#define INSTANCE(name, fn, its, ots) \
  SIMD_CLONES static void \
  name (const float *in, gsize ild, float *out, gsize old, int len) \
  { \
    fn (in, ild, its, out, old, ots, len); \
  }
INSTANCE (f43_bt_h, f43_bt, 4, 1)
INSTANCE (f43_bt_v, f43_bt, 1, 1)
INSTANCE (f43_at_v, f43_at, 1, 1)
INSTANCE (f43_at_h, f43_at, 1, 4)
INSTANCE (f43_g_v, f43_g, 1, 1)
INSTANCE (f23_bt_h, f23_bt, 2, 1)
INSTANCE (f23_bt_v, f23_bt, 1, 1)
INSTANCE (f23_at_v, f23_at, 1, 1)
INSTANCE (f23_at_h, f23_at, 1, 2)
INSTANCE (f23_g_v, f23_g, 1, 1)
#undef INSTANCE

typedef struct {
  int       m, a;          /* output tile, input tile (m + 2) */
  XformFunc bt_h, bt_v;    /* V = B^T d B */
  XformFunc at_v, at_h;    /* Y = A^T M A */
  XformFunc g;             /* U = G g G^T */
} WinoSpec;

static const WinoSpec f23 = { 2, 4, f23_bt_h, f23_bt_v, f23_at_v, f23_at_h, f23_g_v };
static const WinoSpec f43 = { 4, 6, f43_bt_h, f43_bt_v, f43_at_v, f43_at_h, f43_g_v };

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

typedef struct {
  const WinoSpec *s;
  const float    *x, *weight, *bias;
  float          *y, *u, *v, *mm;
  int             n, cin, cout, h, w;
  int             tiles_y, tiles_x;
  int             row0, rows;   /* the chunk: global tile rows (over the batch) */
  int             nt;           /* tiles in the chunk */
  int             nt_pad;       /* ... rounded up to B's panels */
  int             cout_pad;     /* cout rounded up to A's panels */
  gsize           us;           /* floats of U per position */
  gboolean        accumulate;
} Job;

/* U[xi] = (G g G^T)[xi], packed (ddim_packed_a_index) over rows cout
 * rounded up to the panel height, the padding rows zero: element q of U[xi]
 * for q in [begin, end), in blocks. */
static void
weights_range (gsize begin, gsize end, gpointer data)
{
  const Job *j = data;
  const WinoSpec *s = j->s;
  int a = s->a, cin = j->cin;
  gsize us = j->us, panel = (gsize) cin * DDIM_PACKED_MR;
  float *g = g_new (float, 9 * PAIR_BLOCK + 3 * a * PAIR_BLOCK);
  float *tmp = g + 9 * PAIR_BLOCK;
  for (gsize p0 = begin; p0 < end; p0 += PAIR_BLOCK)
    {
      int len = (int) MIN (PAIR_BLOCK, end - p0);
      for (int t = 0; t < len; t++)
        {
          gsize q = p0 + t, rem = q % panel;
          int co = (int) (q / panel) * DDIM_PACKED_MR + (int) (rem % DDIM_PACKED_MR);
          int ci = (int) (rem / DDIM_PACKED_MR);
          const float *wp = j->weight + ((gsize) co * cin + ci) * 9;
          for (int kk = 0; kk < 9; kk++)
            g[kk * PAIR_BLOCK + t] = co < j->cout ? wp[kk] : 0.f;
        }
      /* tmp[i][kx] = sum_ky G[i][ky] g[ky][kx]; U[i][jj] = sum_kx G[jj][kx] tmp[i][kx] */
      for (int kx = 0; kx < 3; kx++)
        s->g (g + kx * PAIR_BLOCK, 3 * PAIR_BLOCK, tmp + kx * PAIR_BLOCK, 3 * PAIR_BLOCK, len);
      for (int i = 0; i < a; i++)
        s->g (tmp + i * 3 * PAIR_BLOCK, PAIR_BLOCK, j->u + (gsize) i * a * us + p0, us, len);
    }
  g_free (g);
}

/* V[xi] for input channels [begin, end) over the chunk's tiles, packed
 * (ddim_packed_b_index) over the tiles rounded up to the panel width, the
 * padding tiles zero. */
static void
input_range (gsize begin, gsize end, gpointer data)
{
  const Job *j = data;
  const WinoSpec *s = j->s;
  int a = s->a, m = s->m, tx = j->tiles_x, nt = j->nt, ntp = j->nt_pad, w = j->w, h = j->h;
  int cin = j->cin;
  gsize vs = (gsize) cin * ntp;
  /* hb[r][k][T], T up to the padded count; the padding stays zero. */
  float *hb = g_new0 (float, (gsize) a * a * ntp);
  float edge[8];
  for (gsize ci = begin; ci < end; ci++)
    {
      /* hb[r][k][T] = sum_xk B^T[k][xk] d[r][xk]: each input row of a tile
       * row, zero-padded, through the horizontal transform. */
      for (int rr = 0; rr < j->rows; rr++)
        {
          int grow = j->row0 + rr;
          int b = grow / j->tiles_y, ty = grow % j->tiles_y;
          const float *plane = j->x + ((gsize) b * cin + ci) * h * w;
          for (int r = 0; r < a; r++)
            {
              int iy = ty * m - 1 + r;
              float *dst = hb + (gsize) r * a * ntp + (gsize) rr * tx;
              if (iy < 0 || iy >= h)
                {
                  for (int k = 0; k < a; k++)
                    memset (dst + (gsize) k * ntp, 0, sizeof (float) * tx);
                  continue;
                }
              /* Tiles 1 .. (w-1)/m - 1 lie inside the row: read in place. The
               * others (left edge, right edge) through a zero-padded copy. */
              const float *src = plane + (gsize) iy * w;
              int inner_end = MAX ((w - 1) / m, 1);
              if (inner_end > 1)
                s->bt_h (src + m - 1, 1, dst + 1, ntp, inner_end - 1);
              for (int t = 0; t < tx; t = (t == 0 ? inner_end : t + 1))
                {
                  for (int xk = 0; xk < a; xk++)
                    {
                      int ix = t * m - 1 + xk;
                      edge[xk] = ix >= 0 && ix < w ? src[ix] : 0.f;
                    }
                  s->bt_h (edge, 1, dst + t, ntp, 1);
                }
            }
        }
      /* V[jj][k] = sum_r B^T[jj][r] hb[r][k], one panel of tiles at a time. */
      for (int k = 0; k < a; k++)
        for (int t0 = 0; t0 < nt; t0 += DDIM_PACKED_NR)
          s->bt_v (hb + (gsize) k * ntp + t0, (gsize) a * ntp,
                   j->v + (gsize) k * vs + ddim_packed_b_index ((int) ci, t0, cin),
                   (gsize) a * vs, DDIM_PACKED_NR);
    }
  g_free (hb);
}

/* M[xi] = U[xi] V[xi] for positions [begin, end). */
static void
gemm_range (gsize begin, gsize end, gpointer data)
{
  const Job *j = data;
  gsize vs = (gsize) j->cin * j->nt_pad, ms = (gsize) j->cout_pad * j->nt_pad;
  for (gsize xi = begin; xi < end; xi++)
    ddim_packed_gemm (j->cout, j->nt, j->cin, j->u + xi * j->us, j->v + xi * vs,
                      j->mm + xi * ms, j->nt_pad);
}

/* Output channels [begin, end): y (+)= A^T M A over the chunk's tiles. */
static void
output_range (gsize begin, gsize end, gpointer data)
{
  const Job *j = data;
  const WinoSpec *s = j->s;
  int a = s->a, m = s->m, tx = j->tiles_x, nt = j->nt, w = j->w, h = j->h;
  gsize ntp = j->nt_pad, ms = (gsize) j->cout_pad * ntp;
  float *sb = g_new (float, (gsize) m * a * nt + (gsize) tx * m);
  float *orow = sb + (gsize) m * a * nt;
  for (gsize co = begin; co < end; co++)
    {
      /* sb[i][k] = sum_jj A^T[i][jj] M[jj][k] */
      for (int k = 0; k < a; k++)
        s->at_v (j->mm + (gsize) k * ms + co * ntp, (gsize) a * ms, sb + (gsize) k * nt,
                 (gsize) a * nt, nt);
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
              /* Output row oy: x-th output of tile t at t * m + x. */
              s->at_h (sb + (gsize) i * a * nt + (gsize) rr * tx, nt, orow, 1, tx);
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
  gsize max_nt = ddim_packed_round ((gsize) chunk_rows * tiles_x, DDIM_PACKED_NR);
  DdimParallel *par = arena->parallel;

  gsize mark = ddim_arena_mark (arena);
  Job job = { s, x, weight, bias, y, NULL, NULL, NULL, n, cin, cout, h, w, tiles_y, tiles_x,
              0, 0, 0, 0, 0, 0, accumulate };
  job.cout_pad = (int) ddim_packed_round (cout, DDIM_PACKED_MR);
  job.us = (gsize) job.cout_pad * cin;
  job.u = ddim_arena_alloc (arena, (gsize) a * a * job.us);
  job.v = ddim_arena_alloc (arena, (gsize) a * a * cin * max_nt);
  job.mm = ddim_arena_alloc (arena, (gsize) a * a * job.cout_pad * max_nt);
  ddim_parallel_for (par, job.us, 4 * PAIR_BLOCK, weights_range, &job);

  for (int row0 = 0; row0 < total_rows; row0 += chunk_rows)
    {
      job.row0 = row0;
      job.rows = MIN (chunk_rows, total_rows - row0);
      job.nt = job.rows * tiles_x;
      job.nt_pad = (int) ddim_packed_round (job.nt, DDIM_PACKED_NR);
      ddim_parallel_for (par, cin, 1, input_range, &job);
      ddim_parallel_for (par, (gsize) a * a, 1, gemm_range, &job);
      ddim_parallel_for (par, cout, 1, output_range, &job);
    }
  ddim_arena_release (arena, mark);
}
