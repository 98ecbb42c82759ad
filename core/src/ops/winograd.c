/* Winograd F(m x m, 3 x 3) convolution.
 *
 * The weights are transformed once per call into U[xi][cout][cin], stored
 * as the packed GEMM's A panels (packed-gemm.h). Then each panel of 32
 * tiles (numbered over the whole batch) goes from input to output on one
 * thread: the input transform writes V[xi][cin][32] (one packed B panel
 * per position), alpha^2 GEMMs per block of output channels give
 * M[xi][cout][32] = U[xi] V[xi], and the output transform scatters the
 * tiles into y. The panel's V and M stay in the core's L2, so the threads
 * do not wait on each other or on the shared cache between the stages (a
 * version with whole-layer stages and OpenBLAS for the GEMMs spent 12% of
 * the forward packing operands and its transforms did not scale to two
 * cores). Every transform is written as small matrices applied to rows of
 * tiles, so the inner loops run over contiguous tiles (SIMD). The weights
 * are transformed on each call: the op keeps no state, so nothing can go
 * stale when the weights change (training, fitting), and at the sizes
 * where Winograd is used this costs a few percent of the GEMMs.
 *
 * Interpolation points: F(2,3) uses 0, +-1 (Lavin & Gray); F(4,3) uses
 * 0, +-sqrt(2), +-sqrt(2)/2, which keeps the float32 error about half that
 * of the textbook 0, +-1, +-2 set (docs/fast-conv-notes.md: 1.0-1.5e-6
 * relative against 2-3e-6). */
#include <string.h>

#include "ops/packed-gemm.h"
#include "ops/parallel.h"
#include "ops/winograd.h"
#include "ops/simd.h"

/* Hot loops over tiles: vectorised, with AVX2 / AVX-512 versions chosen
 * at run time where the toolchain can (the build is for any x86-64). */
#pragma GCC optimize ("O3")

#define S2 1.41421356237309504880f   /* sqrt(2) */
#define H2 0.70710678118654752440f   /* sqrt(2)/2 */

/* The transforms, 1-D, applied to rows of tiles: element j of tile t is
 * in[j * ild + t * its], output k of tile t goes to out[k * old + t * ots].
 * Written out with their shared terms; the tile strides are constants in
 * each instance below so the loops vectorise. */
#define XFORM_LOOP(...) \
  _Pragma ("GCC ivdep") \
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
  DDIM_SIMD_CLONES static void \
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

/* M floats per block of output channels (256 KiB): with the panel's V
 * (alpha^2 x cin x 32 floats, 590 KiB at 128 channels) it stays in L2. */
#define M_BLOCK_FLOATS (1u << 16)
/* Channels ahead that the stages ask the cache for. */
#define PREFETCH_AHEAD 2
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
  float          *y, *u;
  int             n, cin, cout, h, w;
  int             tiles_y, tiles_x, tiles;   /* tiles: over the whole batch */
  int             cout_pad;     /* cout rounded up to A's panels */
  int             cout_block;   /* output channels per M block, a multiple of MR */
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

/* The end of the tile row that tile @t lies in, or @t1 if sooner: the
 * stages walk a panel's tiles (numbered over the batch) a row at a time. */
static inline int
row_segment_end (const Job *j, int t, int t1)
{
  return MIN (t1, (t / j->tiles_x + 1) * j->tiles_x);
}

/* hb[r][k][T - t0] for the tiles T in [t0, t1) (numbered over the batch,
 * all in one tile row) of input channel @ci: each of the a input rows under
 * the tiles through the horizontal transform. Each row is copied, with its
 * zero padding, into @row ((t1 - t0) * m + 2 floats) first: every tile
 * then reads in place and the transform runs over whole vectors of tiles
 * (tiles read in the image itself left a scalar remainder of up to 15
 * tiles per call, half the work at 256 px). */
static void
input_rows (const Job *j, int ci, int t0, int t1, float *hb, int ld, float *row)
{
  const WinoSpec *s = j->s;
  int a = s->a, m = s->m, w = j->w, h = j->h;
  int grow = t0 / j->tiles_x, b = grow / j->tiles_y, ty = grow % j->tiles_y;
  const float *plane = j->x + ((gsize) b * j->cin + ci) * h * w;
  /* The tiles' columns: x0 - 1 .. x0 + (t1 - t0) * m, some outside. */
  int x0 = (t0 % j->tiles_x) * m - 1, span = (t1 - t0) * m + 2;
  int xa = MAX (x0, 0), xb = MIN (x0 + span, w);
  for (int r = 0; r < a; r++)
    {
      int iy = ty * m - 1 + r;
      float *dst = hb + (gsize) r * a * ld;
      if (iy < 0 || iy >= h)
        {
          for (int k = 0; k < a; k++)
            memset (dst + (gsize) k * ld, 0, sizeof (float) * (t1 - t0));
          continue;
        }
      const float *src = plane + (gsize) iy * w;
      if (xa > x0)
        memset (row, 0, sizeof (float) * (xa - x0));
      memcpy (row + (xa - x0), src + xa, sizeof (float) * (xb - xa));
      if (x0 + span > xb)
        memset (row + (xb - x0), 0, sizeof (float) * (x0 + span - xb));
      s->bt_h (row, 1, dst, ld, t1 - t0);
    }
}

/* Output channel @co of the panel's tiles [t0, t1) from sb[i][k][T - t0]
 * = (A^T M)[i][k]: y (+)= A^T M A, row by row of each tile row the panel
 * covers. */
static void
output_tiles (const Job *j, int co, const float *sb, int t0, int t1, float *orow)
{
  int a = j->s->a, m = j->s->m, tx = j->tiles_x, w = j->w, h = j->h;
  float bv = j->bias ? j->bias[co] : 0.f;
  for (int t = t0; t < t1;)
    {
      int grow = t / tx, seg_end = row_segment_end (j, t, t1);
      int b = grow / j->tiles_y, ty = grow % j->tiles_y, x0 = (t % tx) * m;
      int count = MIN ((seg_end - t) * m, w - x0);
      float *plane = j->y + ((gsize) b * j->cout + co) * h * w;
      for (int i = 0; i < m; i++)
        {
          int oy = ty * m + i;
          if (oy >= h)
            break;
          /* Output row oy: x-th output of tile t at t * m + x. */
          j->s->at_h (sb + (gsize) i * a * DDIM_PACKED_NR + (t - t0), DDIM_PACKED_NR, orow, 1,
                      seg_end - t);
          float *dst = plane + (gsize) oy * w + x0;
          if (j->accumulate)
            for (int ox = 0; ox < count; ox++)
              dst[ox] += orow[ox];
          else
            for (int ox = 0; ox < count; ox++)
              dst[ox] = orow[ox] + bv;
        }
      t = seg_end;
    }
}

/* Asks for channel @c of @planes (x for the input, y for the output)
 * under the tiles [t0, t1): the rows of each tile row from @dy0 to @dy1
 * (relative to its first output row), columns one left to one right of
 * the tiles. Consecutive channels' planes lie a whole map apart and each
 * tile row reads only a few cache lines of each, too short a run for the
 * hardware to follow, so each stage asks for a later channel into L2. */
static inline void
prefetch_tiles (const Job *j, const float *planes, int channels, int c, int t0, int t1, int dy0,
                int dy1)
{
  int m = j->s->m, tx = j->tiles_x, w = j->w, h = j->h;
  for (int t = t0; t < t1;)
    {
      int grow = t / tx, seg_end = row_segment_end (j, t, t1);
      int b = grow / j->tiles_y, ty = grow % j->tiles_y;
      int xa = MAX ((t % tx) * m - 1, 0), xb = MIN ((t % tx + seg_end - t) * m + 1, w);
      const float *plane = planes + ((gsize) b * channels + c) * h * w;
      for (int y = MAX (ty * m + dy0, 0); y < MIN (ty * m + dy1, h); y++)
        {
          const char *p = (const char *) (plane + (gsize) y * w + xa);
          const char *e = (const char *) (plane + (gsize) y * w + xb);
          for (; p < e; p += 64)
            __builtin_prefetch (p, 0, 1);
          __builtin_prefetch (e - 1, 0, 1);
        }
      t = seg_end;
    }
}

/* Panels [begin, end) of 32 tiles (numbered over the batch), each from
 * input to output on one thread, so that its transformed input V (per
 * position: one packed B panel, cin x 32) and each block of its products M
 * stay in this core's cache: the input transform, alpha^2 GEMMs per block
 * of output channels, the output transform. */
static void
panel_range (gsize begin, gsize end, gpointer data)
{
  const Job *j = data;
  const WinoSpec *s = j->s;
  int a = s->a, m = s->m, cin = j->cin;
  gsize vs = (gsize) cin * DDIM_PACKED_NR, ms = (gsize) j->cout_block * DDIM_PACKED_NR;
  gsize n_v = (gsize) a * a * vs, n_m = (gsize) a * a * ms, n_hb = (gsize) a * a * DDIM_PACKED_NR;
  gsize n_sb = (gsize) m * a * DDIM_PACKED_NR, n_row = (gsize) DDIM_PACKED_NR * m + 2;
  float *v = g_new (float, n_v + n_m + n_hb + n_sb + n_row + (gsize) DDIM_PACKED_NR * m);
  float *mm = v + n_v, *hb = mm + n_m, *sb = hb + n_hb, *rowbuf = sb + n_sb;
  float *orow = rowbuf + n_row;
  for (gsize p = begin; p < end; p++)
    {
      int t0 = (int) p * DDIM_PACKED_NR, t1 = MIN (j->tiles, t0 + DDIM_PACKED_NR);
      /* hb[r][k][T]: the padding tiles of a last, partial panel zero. */
      if (t1 - t0 < DDIM_PACKED_NR)
        memset (hb, 0, sizeof (float) * n_hb);
      for (int ci = 0; ci < cin; ci++)
        {
          if (ci + PREFETCH_AHEAD < cin)
            prefetch_tiles (j, j->x, cin, ci + PREFETCH_AHEAD, t0, t1, -1, a - 1);
          for (int t = t0; t < t1; t = row_segment_end (j, t, t1))
            input_rows (j, ci, t, row_segment_end (j, t, t1), hb + (t - t0), DDIM_PACKED_NR,
                        rowbuf);
          /* V[jj][k] = sum_r B^T[jj][r] hb[r][k] */
          for (int k = 0; k < a; k++)
            s->bt_v (hb + (gsize) k * DDIM_PACKED_NR, (gsize) a * DDIM_PACKED_NR,
                     v + (gsize) k * vs + (gsize) ci * DDIM_PACKED_NR, (gsize) a * vs,
                     DDIM_PACKED_NR);
        }
      for (int c0 = 0; c0 < j->cout; c0 += j->cout_block)
        {
          int rows = MIN (j->cout_block, j->cout_pad - c0);
          for (int xi = 0; xi < a * a; xi++)
            ddim_packed_gemm (rows, DDIM_PACKED_NR, cin,
                              j->u + xi * j->us + ddim_packed_a_index (c0, 0, cin),
                              v + xi * vs, mm + xi * ms, DDIM_PACKED_NR);
          for (int co = c0; co < MIN (c0 + rows, j->cout); co++)
            {
              if (co + PREFETCH_AHEAD < j->cout)
                prefetch_tiles (j, j->y, j->cout, co + PREFETCH_AHEAD, t0, t1, 0, m);
              /* sb[i][k] = sum_jj A^T[i][jj] M[jj][k] */
              for (int k = 0; k < a; k++)
                s->at_v (mm + (gsize) k * ms + (gsize) (co - c0) * DDIM_PACKED_NR,
                         (gsize) a * ms, sb + (gsize) k * DDIM_PACKED_NR,
                         (gsize) a * DDIM_PACKED_NR, DDIM_PACKED_NR);
              output_tiles (j, co, sb, t0, t1, orow);
            }
        }
    }
  g_free (v);
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
  DdimParallel *par = arena->parallel;

  gsize mark = ddim_arena_mark (arena);
  Job job = { s, x, weight, bias, y, NULL, n, cin, cout, h, w, tiles_y, tiles_x,
              n * tiles_y * tiles_x, 0, 0, 0, accumulate };
  job.cout_pad = (int) ddim_packed_round (cout, DDIM_PACKED_MR);
  int block = (int) (M_BLOCK_FLOATS / (a * a * DDIM_PACKED_NR)) / DDIM_PACKED_MR * DDIM_PACKED_MR;
  job.cout_block = MIN (MAX (block, DDIM_PACKED_MR), job.cout_pad);
  job.us = (gsize) job.cout_pad * cin;
  job.u = ddim_arena_alloc (arena, (gsize) a * a * job.us);
  ddim_parallel_for (par, job.us, 4 * PAIR_BLOCK, weights_range, &job);
  ddim_parallel_for (par, (job.tiles + DDIM_PACKED_NR - 1) / DDIM_PACKED_NR, 1, panel_range,
                     &job);
  ddim_arena_release (arena, mark);
}
