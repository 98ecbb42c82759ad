/* Spatial self-attention as diffusers' Attention block computes it for
 * UNet2DModel, channel-major throughout so every product is one GEMM:
 * Q = Wq xn + bq is [c, hw]; scores S = Q_h^T K_h [hw, hw]; O_h = V_h S^T. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "ops/ops.h"

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

static void
softmax_rows (float *s, int rows, int cols)
{
  for (int r = 0; r < rows; r++)
    {
      float *row = s + (gsize) r * cols;
      float m = row[0];
      for (int j = 1; j < cols; j++)
        m = row[j] > m ? row[j] : m;
      double sum = 0;
      for (int j = 0; j < cols; j++)
        {
          row[j] = expf (row[j] - m);
          sum += row[j];
        }
      float inv = (float) (1.0 / sum);
      for (int j = 0; j < cols; j++)
        row[j] *= inv;
    }
}

void
ddim_attention_forward (float *x, int n, int c, int hw, const DdimAttentionParams *p,
                        DdimArena *arena)
{
  int d = c / p->heads;
  float scale = 1.f / sqrtf ((float) d);
  gsize plane = (gsize) c * hw;
  gsize mark = ddim_arena_mark (arena);
  float *xn = ddim_arena_alloc (arena, plane);
  float *q = ddim_arena_alloc (arena, plane);
  float *k = ddim_arena_alloc (arena, plane);
  float *v = ddim_arena_alloc (arena, plane);
  float *s = ddim_arena_alloc (arena, (gsize) hw * hw);

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
      for (int h = 0; h < p->heads; h++)
        {
          const float *qh = q + (gsize) h * d * hw;
          const float *kh = k + (gsize) h * d * hw;
          const float *vh = v + (gsize) h * d * hw;
          cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, hw, hw, d, scale,
                       qh, hw, kh, hw, 0.f, s, hw);
          softmax_rows (s, hw, hw);
          cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, d, hw, hw, 1.f,
                       vh, hw, s, hw, 0.f, xn + (gsize) h * d * hw, hw);
        }
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
