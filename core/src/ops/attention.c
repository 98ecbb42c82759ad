/* Spatial self-attention as diffusers' Attention block computes it for
 * UNet2DModel, channel-major throughout so every product is one GEMM:
 * Q = Wq xn + bq is [c, hw]; scores S = Q_h^T K_h [hw, hw]; O_h = V_h S^T.
 * The forward never holds S whole: it goes over tiles of queries and blocks
 * of keys (memory linear in the tokens); the backward and the JVP recompute
 * S a block of query rows at a time. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "ops/ops.h"
#include "ops/parallel.h"
#include "ops/softmax.h"

/* Y[c, P] = W[c, c] X[c, P] + b. */
static void
project (const float *w, const float *b, const float *x, int c, int P, float *y)
{
  for (int o = 0; o < c; o++)
    {
      float v = b ? b[o] : 0.f;
      float *row = y + (gsize) o * P;
      for (int p = 0; p < P; p++)
        row[p] = v;
    }
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, c, P, c, 1.f, w, c, x, P, 1.f, y, P);
}

/* Tiles of the forward: query rows per work item and keys per block. A
 * block's scores (128 x 512 floats, 256 KiB) stay in the L2 cache between
 * the two GEMMs and the exponentials. */
#define ATTN_QUERY_TILE 128
#define ATTN_KEY_TILE 512
#define ATTN_QUERY_TILE_MAX 1024
/* Least floating-point work for a share of the heads to go to a thread. */
#define ATTN_MIN_FLOPS_PER_THREAD 4e6

typedef struct {
  const float *q, *k, *v;   /* [c, hw] */
  float       *out;         /* [c, hw]: the heads' outputs side by side */
  int          hw, d, q_tile, k_tile, n_q_tiles;
  float        scale;
  float       *scratch;     /* one slot of slot_floats per thread */
  gsize        slot_floats;
  gint         next_slot;
} HeadsJob;

/* The output of head @h for query rows [i0, i0 + rows), a block of keys at
 * a time with the online softmax: per row the running maximum m and sum l;
 * a new block with a larger maximum rescales what is accumulated by
 * exp(m_old - m_new). O is [rows, d] so that rescaling is per row. */
static void
attend_tile (const HeadsJob *j, int h, int i0, int rows, float *s, float *o)
{
  int d = j->d, hw = j->hw;
  gsize hoff = (gsize) h * d * hw;
  const float *qh = j->q + hoff, *kh = j->k + hoff, *vh = j->v + hoff;
  float m[ATTN_QUERY_TILE_MAX];
  double l[ATTN_QUERY_TILE_MAX];

  for (int j0 = 0; j0 < hw; j0 += j->k_tile)
    {
      int cols = MIN (j->k_tile, hw - j0);
      cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, rows, cols, d, j->scale,
                   qh + i0, hw, kh + j0, hw, 0.f, s, cols);
      for (int r = 0; r < rows; r++)
        {
          float *sr = s + (gsize) r * cols;
          float block_max = ddim_vmax (sr, cols);
          float m_new = j0 == 0 || block_max > m[r] ? block_max : m[r];
          double sum = ddim_vexp_shifted_sum (sr, cols, m_new);
          if (j0 == 0)
            l[r] = sum;
          else
            {
              float alpha = expf (m[r] - m_new);
              l[r] = l[r] * alpha + sum;
              if (alpha != 1.f)
                for (int k = 0; k < d; k++)
                  o[(gsize) r * d + k] *= alpha;
            }
          m[r] = m_new;
        }
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, rows, d, cols, 1.f, s, cols,
                   vh + j0, hw, j0 == 0 ? 0.f : 1.f, o, d);
    }

  float inv[ATTN_QUERY_TILE_MAX];
  for (int r = 0; r < rows; r++)
    inv[r] = (float) (1.0 / l[r]);
  for (int k = 0; k < d; k++)
    {
      float *dst = j->out + hoff + (gsize) k * hw + i0;
      for (int r = 0; r < rows; r++)
        dst[r] = o[(gsize) r * d + k] * inv[r];
    }
}

static void
attend_range (gsize begin, gsize end, gpointer data)
{
  HeadsJob *j = data;
  float *s = j->scratch + (gsize) g_atomic_int_add (&j->next_slot, 1) * j->slot_floats;
  float *o = s + (gsize) j->q_tile * j->k_tile;
  for (gsize it = begin; it < end; it++)
    {
      int h = (int) (it / j->n_q_tiles);
      int i0 = (int) (it % j->n_q_tiles) * j->q_tile;
      attend_tile (j, h, i0, MIN (j->q_tile, j->hw - i0), s, o);
    }
}

/* All heads' outputs into @out, tiles shared between the threads of
 * @arena. The tiles' GEMMs run single-threaded meanwhile (the threads are
 * already busy): OpenBLAS's thread count is process-wide, so it is lowered
 * for the duration and restored. */
static void
attend_heads (const float *q, const float *k, const float *v, int c, int hw, int heads,
              int q_tile, int k_tile, float *out, DdimArena *arena)
{
  int d = c / heads;
  q_tile = CLAMP (q_tile > 0 ? q_tile : ATTN_QUERY_TILE, 1, MIN (hw, ATTN_QUERY_TILE_MAX));
  k_tile = CLAMP (k_tile > 0 ? k_tile : ATTN_KEY_TILE, 1, hw);
  int n_threads = ddim_parallel_get_n_threads (arena->parallel);
  gsize slot = (gsize) q_tile * k_tile + (gsize) q_tile * d;
  slot = (slot + 15) & ~(gsize) 15;   /* 64-byte aligned slots */

  gsize mark = ddim_arena_mark (arena);
  HeadsJob job = {
    .q = q, .k = k, .v = v, .out = out, .hw = hw, .d = d, .q_tile = q_tile,
    .k_tile = k_tile, .n_q_tiles = (hw + q_tile - 1) / q_tile,
    .scale = 1.f / sqrtf ((float) d),
    .scratch = ddim_arena_alloc (arena, slot * n_threads), .slot_floats = slot,
  };
  gsize n_items = (gsize) heads * job.n_q_tiles;
  double item_flops = 4.0 * q_tile * hw * d;
  gsize min_items = (gsize) MAX (1.0, ceil (ATTN_MIN_FLOPS_PER_THREAD / item_flops));

#ifdef OPENBLAS_VERSION
  int blas_threads = openblas_get_num_threads ();
  gboolean lower = n_threads > 1 && blas_threads > 1;
  if (lower)
    openblas_set_num_threads (1);
#endif
  ddim_parallel_for (arena->parallel, n_items, min_items, attend_range, &job);
#ifdef OPENBLAS_VERSION
  if (lower)
    openblas_set_num_threads (blas_threads);
#endif
  ddim_arena_release (arena, mark);
}

void
ddim_attention_forward_tiles (float *x, int n, int c, int hw, const DdimAttentionParams *p,
                              int q_tile, int k_tile, DdimArena *arena)
{
  g_return_if_fail (x != NULL && p != NULL && arena != NULL);
  g_return_if_fail (p->heads > 0 && c % p->heads == 0 && hw > 0);

  gsize plane = (gsize) c * hw;
  gsize mark = ddim_arena_mark (arena);
  float *xn = ddim_arena_alloc (arena, plane);
  float *q = ddim_arena_alloc (arena, plane);
  float *k = ddim_arena_alloc (arena, plane);
  float *v = ddim_arena_alloc (arena, plane);

  for (int b = 0; b < n; b++)
    {
      float *xb = x + (gsize) b * plane;
      if (p->gn_gamma)
        ddim_group_norm_forward (xb, 1, c, hw, p->gn_groups, p->gn_eps, p->gn_gamma,
                                 p->gn_beta, FALSE, xn);
      else
        memcpy (xn, xb, sizeof (float) * plane);
      project (p->q_w, p->q_b, xn, c, hw, q);
      project (p->k_w, p->k_b, xn, c, hw, k);
      project (p->v_w, p->v_b, xn, c, hw, v);
      /* Heads write their output into xn (no longer needed). */
      attend_heads (q, k, v, c, hw, p->heads, q_tile, k_tile, xn, arena);
      /* out = Wo O + bo + residual, then rescale. */
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, c, hw, c, 1.f, p->o_w, c,
                   xn, hw, 1.f, xb, hw);
      for (int o = 0; o < c; o++)
        {
          float *row = xb + (gsize) o * hw;
          float bo = p->o_b ? p->o_b[o] : 0.f;
          for (int i = 0; i < hw; i++)
            row[i] = (row[i] + bo) / p->rescale;
        }
    }
  ddim_arena_release (arena, mark);
}

void
ddim_attention_forward (float *x, int n, int c, int hw, const DdimAttentionParams *p,
                        DdimArena *arena)
{
  ddim_attention_forward_tiles (x, n, c, hw, p, 0, 0, arena);
}

/* Target size of one block of score rows in the backward, in floats. */
#define ATTN_BLOCK_FLOATS (1u << 20)

/* dW[c, c] += dY[c, P] X[c, P]^T, db += row sums of dY. */
static void
project_grads (const float *dy, const float *x, int c, int P, float *dw, float *db)
{
  if (dw)
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, c, c, P, 1.f, dy, P, x, P,
                 1.f, dw, c);
  if (db)
    for (int o = 0; o < c; o++)
      {
        const float *row = dy + (gsize) o * P;
        double s = 0;
        for (int i = 0; i < P; i++)
          s += row[i];
        db[o] += (float) s;
      }
}

/* Per sample, with g = dy / rescale and per head h, over blocks of query
 * rows (P = softmax rows of the block, recomputed):
 *   O_h = V_h P^T (only for dWo);  dO = Wo^T g
 *   dV_h += dO_h P;  dP = dO_h^T V_h;  dS = P (dP - rowsum (P dP))
 *   dQ_h = scale K_h dS^T;  dK_h += scale Q_h dS
 * then the projections' grads, dxn = Wq^T dQ + Wk^T dK + Wv^T dV, the group
 * norm's backward, and dx = g + dx_via_xn. @x and @dy are fully read for a
 * sample before its @dx is written, so @dx may equal @x or @dy. */
void
ddim_attention_backward_block (const float *x, int n, int c, int hw,
                               const DdimAttentionParams *p, const float *dy, float *dx,
                               DdimAttentionGrads *grads, int block_rows, DdimArena *arena)
{
  g_return_if_fail (x != NULL && dy != NULL && p != NULL && arena != NULL);
  g_return_if_fail (p->heads > 0 && c % p->heads == 0 && hw > 0);

  static const DdimAttentionGrads none = { 0 };
  const DdimAttentionGrads *gr = grads ? grads : &none;
  int d = c / p->heads;
  float scale = 1.f / sqrtf ((float) d);
  float rs = 1.f / p->rescale;
  gboolean gn = p->gn_gamma != NULL;
  gboolean want_dxn = dx != NULL || (gn && (gr->gn_gamma || gr->gn_beta));
  gsize plane = (gsize) c * hw;

  if (block_rows <= 0)
    block_rows = (int) (ATTN_BLOCK_FLOATS / (gsize) hw);
  block_rows = CLAMP (block_rows, 1, hw);

  gsize mark = ddim_arena_mark (arena);
  float *xn = gn ? ddim_arena_alloc (arena, plane) : NULL;
  float *q = ddim_arena_alloc (arena, plane);
  float *k = ddim_arena_alloc (arena, plane);
  float *v = ddim_arena_alloc (arena, plane);
  float *dO = ddim_arena_alloc (arena, plane);
  float *dq = ddim_arena_alloc (arena, plane);
  float *dk = ddim_arena_alloc (arena, plane);
  float *dv = ddim_arena_alloc (arena, plane);
  float *o = gr->o_w ? ddim_arena_alloc (arena, plane) : NULL;
  float *s = ddim_arena_alloc (arena, (gsize) block_rows * hw);
  float *ds = ddim_arena_alloc (arena, (gsize) block_rows * hw);

  for (int b = 0; b < n; b++)
    {
      const float *xb = x + (gsize) b * plane;
      const float *dyb = dy + (gsize) b * plane;
      const float *xin = xb;
      if (gn)
        {
          ddim_group_norm_forward (xb, 1, c, hw, p->gn_groups, p->gn_eps, p->gn_gamma,
                                   p->gn_beta, FALSE, xn);
          xin = xn;
        }
      project (p->q_w, p->q_b, xin, c, hw, q);
      project (p->k_w, p->k_b, xin, c, hw, k);
      project (p->v_w, p->v_b, xin, c, hw, v);
      cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, c, hw, c, rs, p->o_w, c,
                   dyb, hw, 0.f, dO, hw);
      memset (dk, 0, sizeof (float) * plane);
      memset (dv, 0, sizeof (float) * plane);

      for (int h = 0; h < p->heads; h++)
        {
          gsize hoff = (gsize) h * d * hw;
          const float *qh = q + hoff, *kh = k + hoff, *vh = v + hoff, *dOh = dO + hoff;
          float *dqh = dq + hoff, *dkh = dk + hoff, *dvh = dv + hoff;
          for (int i0 = 0; i0 < hw; i0 += block_rows)
            {
              int rb = MIN (block_rows, hw - i0);
              cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, rb, hw, d, scale,
                           qh + i0, hw, kh, hw, 0.f, s, hw);
              ddim_softmax_rows (s, rb, hw);
              if (o)
                cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, d, rb, hw, 1.f,
                             vh, hw, s, hw, 0.f, o + hoff + i0, hw);
              cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, d, hw, rb, 1.f,
                           dOh + i0, hw, s, hw, 1.f, dvh, hw);
              cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, rb, hw, d, 1.f,
                           dOh + i0, hw, vh, hw, 0.f, ds, hw);
              for (int r = 0; r < rb; r++)
                {
                  const float *pr = s + (gsize) r * hw;
                  float *dr = ds + (gsize) r * hw;
                  double dot = 0;
                  for (int j = 0; j < hw; j++)
                    dot += pr[j] * dr[j];
                  float fdot = (float) dot;
                  for (int j = 0; j < hw; j++)
                    dr[j] = pr[j] * (dr[j] - fdot);
                }
              cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, d, rb, hw, scale,
                           kh, hw, ds, hw, 0.f, dqh + i0, hw);
              cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, d, hw, rb, scale,
                           qh + i0, hw, ds, hw, 1.f, dkh, hw);
            }
        }

      if (gr->o_w)
        cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, c, c, hw, rs, dyb, hw,
                     o, hw, 1.f, gr->o_w, c);
      if (gr->o_b)
        for (int ch = 0; ch < c; ch++)
          {
            const float *row = dyb + (gsize) ch * hw;
            double sum = 0;
            for (int i = 0; i < hw; i++)
              sum += row[i];
            gr->o_b[ch] += (float) (sum * rs);
          }
      project_grads (dq, xin, c, hw, gr->q_w, gr->q_b);
      project_grads (dk, xin, c, hw, gr->k_w, gr->k_b);
      project_grads (dv, xin, c, hw, gr->v_w, gr->v_b);
      if (!want_dxn)
        continue;

      /* dxn into q (no longer needed). */
      float *dxn = q;
      cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, c, hw, c, 1.f, p->q_w, c,
                   dq, hw, 0.f, dxn, hw);
      cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, c, hw, c, 1.f, p->k_w, c,
                   dk, hw, 1.f, dxn, hw);
      cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, c, hw, c, 1.f, p->v_w, c,
                   dv, hw, 1.f, dxn, hw);
      if (gn)
        ddim_group_norm_backward (xb, 1, c, hw, p->gn_groups, p->gn_eps, p->gn_gamma,
                                  p->gn_beta, FALSE, dxn, dxn, gr->gn_gamma, gr->gn_beta);
      if (dx)
        {
          float *dxb = dx + (gsize) b * plane;
          for (gsize i = 0; i < plane; i++)
            dxb[i] = dyb[i] * rs + dxn[i];
        }
    }
  ddim_arena_release (arena, mark);
}

void
ddim_attention_backward (const float *x, int n, int c, int hw, const DdimAttentionParams *p,
                         const float *dy, float *dx, DdimAttentionGrads *grads,
                         DdimArena *arena)
{
  ddim_attention_backward_block (x, n, c, hw, p, dy, dx, grads, 0, arena);
}

/* Forward-mode derivative, per sample and head, over blocks of query rows
 * (P = softmax rows of the block, recomputed from x):
 *   dS = scale (dQ_h^T K_h + Q_h^T dK_h);  dP = P (dS - rowsum (P dS))
 *   dO_h = dV_h P^T + V_h dP^T
 * then dy = (dx + Wo dO) / rescale. @dx is fully read for a sample before
 * its @dy is written, so @dy may equal @dx. */
void
ddim_attention_jvp (const float *x, const float *dx, int n, int c, int hw,
                    const DdimAttentionParams *p, float *dy, DdimArena *arena)
{
  g_return_if_fail (x != NULL && dx != NULL && dy != NULL && p != NULL && arena != NULL);
  g_return_if_fail (p->heads > 0 && c % p->heads == 0 && hw > 0);

  int d = c / p->heads;
  float scale = 1.f / sqrtf ((float) d);
  gboolean gn = p->gn_gamma != NULL;
  gsize plane = (gsize) c * hw;
  int block_rows = CLAMP ((int) (ATTN_BLOCK_FLOATS / (gsize) hw), 1, hw);

  gsize mark = ddim_arena_mark (arena);
  float *xn = gn ? ddim_arena_alloc (arena, plane) : NULL;
  float *dxn = gn ? ddim_arena_alloc (arena, plane) : NULL;
  float *q = ddim_arena_alloc (arena, plane);
  float *k = ddim_arena_alloc (arena, plane);
  float *v = ddim_arena_alloc (arena, plane);
  float *dq = ddim_arena_alloc (arena, plane);
  float *dk = ddim_arena_alloc (arena, plane);
  float *dv = ddim_arena_alloc (arena, plane);
  float *dO = ddim_arena_alloc (arena, plane);
  float *s = ddim_arena_alloc (arena, (gsize) block_rows * hw);
  float *ds = ddim_arena_alloc (arena, (gsize) block_rows * hw);

  for (int b = 0; b < n; b++)
    {
      const float *xb = x + (gsize) b * plane;
      const float *dxb = dx + (gsize) b * plane;
      const float *xin = xb, *dxin = dxb;
      if (gn)
        {
          ddim_group_norm_forward (xb, 1, c, hw, p->gn_groups, p->gn_eps, p->gn_gamma,
                                   p->gn_beta, FALSE, xn);
          ddim_group_norm_jvp (xb, dxb, 1, c, hw, p->gn_groups, p->gn_eps, p->gn_gamma,
                               p->gn_beta, FALSE, dxn);
          xin = xn;
          dxin = dxn;
        }
      project (p->q_w, p->q_b, xin, c, hw, q);
      project (p->k_w, p->k_b, xin, c, hw, k);
      project (p->v_w, p->v_b, xin, c, hw, v);
      project (p->q_w, NULL, dxin, c, hw, dq);
      project (p->k_w, NULL, dxin, c, hw, dk);
      project (p->v_w, NULL, dxin, c, hw, dv);

      for (int h = 0; h < p->heads; h++)
        {
          gsize hoff = (gsize) h * d * hw;
          const float *qh = q + hoff, *kh = k + hoff, *vh = v + hoff;
          const float *dqh = dq + hoff, *dkh = dk + hoff, *dvh = dv + hoff;
          for (int i0 = 0; i0 < hw; i0 += block_rows)
            {
              int rb = MIN (block_rows, hw - i0);
              cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, rb, hw, d, scale,
                           qh + i0, hw, kh, hw, 0.f, s, hw);
              ddim_softmax_rows (s, rb, hw);
              cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, rb, hw, d, scale,
                           dqh + i0, hw, kh, hw, 0.f, ds, hw);
              cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, rb, hw, d, scale,
                           qh + i0, hw, dkh, hw, 1.f, ds, hw);
              for (int r = 0; r < rb; r++)
                {
                  const float *pr = s + (gsize) r * hw;
                  float *dr = ds + (gsize) r * hw;
                  double dot = 0;
                  for (int j = 0; j < hw; j++)
                    dot += pr[j] * dr[j];
                  float fdot = (float) dot;
                  for (int j = 0; j < hw; j++)
                    dr[j] = pr[j] * (dr[j] - fdot);
                }
              float *dOb = dO + hoff + i0;
              cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, d, rb, hw, 1.f,
                           dvh, hw, s, hw, 0.f, dOb, hw);
              cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, d, rb, hw, 1.f,
                           vh, hw, ds, hw, 1.f, dOb, hw);
            }
        }
      /* Wo dO into q (no longer needed). */
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, c, hw, c, 1.f, p->o_w, c,
                   dO, hw, 0.f, q, hw);
      float *dyb = dy + (gsize) b * plane;
      for (gsize i = 0; i < plane; i++)
        dyb[i] = (dxb[i] + q[i]) / p->rescale;
    }
  ddim_arena_release (arena, mark);
}
