/* Group normalisation (with an optional fused SiLU). Statistics in double so
 * that large groups (e.g. 4 x 256 x 256 values) keep float32 accuracy. */
#include <math.h>
#include <string.h>

#include "ops/ops.h"
#include "ops/parallel.h"
#include "ops/simd.h"

/* The forward's row loops are CPU-bound (a fifth of a UNet forward once
 * the convolutions are fast): vectorised, with AVX2 / AVX-512 versions
 * chosen at run time where the toolchain can. */
#pragma GCC optimize ("O3")

/* Sums in double over 8 interleaved lanes (vectorisable without
 * reassociating: each lane is summed in order), then the lanes in order. */
#define LANES 8

DDIM_SIMD_CLONES static double
sum_f64 (const float *x, gsize count)
{
  double acc[LANES] = { 0 };
  gsize i = 0;
  for (; i + LANES <= count; i += LANES)
    for (int k = 0; k < LANES; k++)
      acc[k] += x[i + k];
  for (; i < count; i++)
    acc[i % LANES] += x[i];
  double s = 0;
  for (int k = 0; k < LANES; k++)
    s += acc[k];
  return s;
}

DDIM_SIMD_CLONES static double
sum_sq_dev_f64 (const float *x, gsize count, double mean)
{
  double acc[LANES] = { 0 };
  gsize i = 0;
  for (; i + LANES <= count; i += LANES)
    for (int k = 0; k < LANES; k++)
      {
        double d = x[i + k] - mean;
        acc[k] += d * d;
      }
  for (; i < count; i++)
    {
      double d = x[i] - mean;
      acc[i % LANES] += d * d;
    }
  double s = 0;
  for (int k = 0; k < LANES; k++)
    s += acc[k];
  return s;
}

/* e^x for the SiLU, within about 2 ulp of expf over the range that
 * matters (|x| <= 87; beyond, the SiLU is x or 0 to float precision):
 * x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^7
 * (truncation 5e-9 relative), 2^n built in the exponent bits. */
static inline float
exp_for_silu (float x)
{
  x = x < -87.f ? -87.f : x;
  x = x > 87.f ? 87.f : x;
  /* Round to nearest with the 1.5 * 2^23 trick (vectorises everywhere). */
  float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  float r = x - n * 0.693145751953125f - n * 1.42860682030941723212e-6f;
  float p = 1.f / 5040;
  p = p * r + 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  gint32 bits = ((gint32) n + 127) << 23;
  float two_n;
  memcpy (&two_n, &bits, sizeof two_n);
  return p * two_n;
}

DDIM_SIMD_CLONES static void
affine_silu_row (const float *x, float scale, float shift, float *y, int n)
{
  for (int i = 0; i < n; i++)
    {
      float v = x[i] * scale + shift;
      y[i] = v / (1.f + exp_for_silu (-v));
    }
}

DDIM_SIMD_CLONES static void
affine_row (const float *x, float scale, float shift, float *y, int n)
{
  for (int i = 0; i < n; i++)
    y[i] = x[i] * scale + shift;
}

/* Mean and 1/sqrt(var + eps) of one group, two-pass in double. Forward
 * and backward must agree on these exactly. */
static void
group_stats (const float *xg, gsize count, float eps, float *mean_out, float *inv_out)
{
  double mean = sum_f64 (xg, count) / count;
  double sq = sum_sq_dev_f64 (xg, count, mean);
  *mean_out = (float) mean;
  *inv_out = (float) (1.0 / sqrt (sq / count + eps));
}

void
ddim_group_norm_forward (const float *x, int n, int c, int hw, int groups, float eps,
                         const float *gamma, const float *beta, gboolean silu, float *y)
{
  int cpg = c / groups;
  gsize count = (gsize) cpg * hw;
  for (int b = 0; b < n; b++)
    for (int g = 0; g < groups; g++)
      {
        gsize off = ((gsize) b * c + (gsize) g * cpg) * hw;
        const float *xg = x + off;
        float fmean, inv;
        group_stats (xg, count, eps, &fmean, &inv);
        for (int ci = 0; ci < cpg; ci++)
          {
            int ch = g * cpg + ci;
            float scale = inv * gamma[ch];
            float shift = beta[ch] - fmean * scale;
            const float *xs = xg + (gsize) ci * hw;
            float *ys = y + off + (gsize) ci * hw;
            if (silu)
              affine_silu_row (xs, scale, shift, ys, hw);
            else
              affine_row (xs, scale, shift, ys, hw);
          }
      }
}

/* With v = xhat * gamma + beta (and y = silu (v) when @silu):
 *   dv      = dy                               (or dy * silu'(v))
 *   dgamma += sum dv * xhat,  dbeta += sum dv
 *   dx      = inv * (gamma dv - mean_g (gamma dv) - xhat mean_g (gamma dv xhat))
 * Pass 1 stores dv into @dx (so @dx may equal @dy) and gathers the sums per
 * channel; pass 2 turns dv into dx from x, so @dx must not equal @x. */
void
ddim_group_norm_backward (const float *x, int n, int c, int hw, int groups, float eps,
                          const float *gamma, const float *beta, gboolean silu,
                          const float *dy, float *dx, float *dgamma, float *dbeta)
{
  g_return_if_fail (x != NULL && dy != NULL && gamma != NULL);
  g_return_if_fail (!silu || beta != NULL);
  g_return_if_fail (groups > 0 && c % groups == 0);
  g_return_if_fail (dx == NULL || dx != x);

  int cpg = c / groups;
  gsize count = (gsize) cpg * hw;
  for (int b = 0; b < n; b++)
    for (int g = 0; g < groups; g++)
      {
        gsize off = ((gsize) b * c + (gsize) g * cpg) * hw;
        const float *xg = x + off;
        float fmean, inv;
        group_stats (xg, count, eps, &fmean, &inv);

        /* Pass 1: dv, per-channel sums of dv and dv * xhat. */
        double m1 = 0, m2 = 0;  /* sums of gamma dv and gamma dv xhat over the group */
        for (int ci = 0; ci < cpg; ci++)
          {
            int ch = g * cpg + ci;
            const float *xs = xg + (gsize) ci * hw;
            const float *dys = dy + off + (gsize) ci * hw;
            float *dvs = dx ? dx + off + (gsize) ci * hw : NULL;
            double s_dv = 0, s_dvx = 0;   /* s_dvx: sum dv * (x - mean) */
            if (silu)
              {
                float scale = inv * gamma[ch];
                float shift = beta[ch] - fmean * scale;
                for (int i = 0; i < hw; i++)
                  {
                    float v = xs[i] * scale + shift;
                    float sg = 1.f / (1.f + expf (-v));
                    float dv = dys[i] * sg * (1.f + v * (1.f - sg));
                    if (dvs)
                      dvs[i] = dv;
                    s_dv += dv;
                    s_dvx += dv * (xs[i] - fmean);
                  }
              }
            else
              for (int i = 0; i < hw; i++)
                {
                  float dv = dys[i];
                  if (dvs)
                    dvs[i] = dv;
                  s_dv += dv;
                  s_dvx += dv * (xs[i] - fmean);
                }
            double s_dvxhat = s_dvx * inv;
            if (dgamma)
              dgamma[ch] += (float) s_dvxhat;
            if (dbeta)
              dbeta[ch] += (float) s_dv;
            m1 += gamma[ch] * s_dv;
            m2 += gamma[ch] * s_dvxhat;
          }
        if (!dx)
          continue;
        m1 /= count;
        m2 /= count;

        /* Pass 2: dx = a_ch dv + cx (x - mean) + c0, with xhat = (x - mean) inv. */
        float cx = (float) (-(double) inv * inv * m2);
        float c0 = (float) (-(double) inv * m1);
        for (int ci = 0; ci < cpg; ci++)
          {
            int ch = g * cpg + ci;
            float a = inv * gamma[ch];
            const float *xs = xg + (gsize) ci * hw;
            float *d = dx + off + (gsize) ci * hw;
            for (int i = 0; i < hw; i++)
              d[i] = a * d[i] + cx * (xs[i] - fmean) + c0;
          }
      }
}

/* Forward-mode derivative. Pass 1 gathers the group's mean and variance of
 * x and the sums of dx and (x - mean) dx; pass 2 writes each dy from the dx
 * at the same position, so @dy may equal @dx. */
void
ddim_group_norm_jvp (const float *x, const float *dx, int n, int c, int hw, int groups,
                     float eps, const float *gamma, const float *beta, gboolean silu, float *dy)
{
  g_return_if_fail (x != NULL && dx != NULL && dy != NULL && gamma != NULL);
  g_return_if_fail (!silu || beta != NULL);
  g_return_if_fail (groups > 0 && c % groups == 0);
  g_return_if_fail (dy != x);

  int cpg = c / groups;
  gsize count = (gsize) cpg * hw;
  for (int b = 0; b < n; b++)
    for (int g = 0; g < groups; g++)
      {
        gsize off = ((gsize) b * c + (gsize) g * cpg) * hw;
        const float *xg = x + off;
        const float *dg = dx + off;
        double sum = 0;
        for (gsize i = 0; i < count; i++)
          sum += xg[i];
        double mean = sum / count;
        double sq = 0, s_dx = 0, s_xdx = 0;
        for (gsize i = 0; i < count; i++)
          {
            double d = xg[i] - mean;
            sq += d * d;
            s_dx += dg[i];
            s_xdx += d * dg[i];
          }
        double inv = 1.0 / sqrt (sq / count + eps);
        /* dxhat = inv (dx - m_dx) - (x - mean) inv^3 m_xdx */
        float m_dx = (float) (s_dx / count);
        float cx = (float) (inv * inv * inv * (s_xdx / count));
        float finv = (float) inv, fmean = (float) mean;
        for (int ci = 0; ci < cpg; ci++)
          {
            int ch = g * cpg + ci;
            const float *xs = xg + (gsize) ci * hw;
            const float *ds = dg + (gsize) ci * hw;
            float *ys = dy + off + (gsize) ci * hw;
            float gm = gamma[ch];
            if (silu)
              {
                float scale = finv * gm;
                float shift = beta[ch] - fmean * scale;
                for (int i = 0; i < hw; i++)
                  {
                    float dv = gm * (finv * (ds[i] - m_dx) - (xs[i] - fmean) * cx);
                    float v = xs[i] * scale + shift;
                    float sg = 1.f / (1.f + expf (-v));
                    ys[i] = dv * sg * (1.f + v * (1.f - sg));
                  }
              }
            else
              for (int i = 0; i < hw; i++)
                ys[i] = gm * (finv * (ds[i] - m_dx) - (xs[i] - fmean) * cx);
          }
      }
}

typedef struct {
  const float *x;
  int c, hw, groups;
  float eps;
  const float *gamma, *beta;
  gboolean silu;
  float *y;
} GroupNormJob;

/* Items are (sample, group) pairs; each range is normalised by the serial
 * code on a channel slice, since groups are independent. */
static void
group_norm_range (gsize begin, gsize end, gpointer data)
{
  GroupNormJob *j = data;
  int cpg = j->c / j->groups;
  gsize plane = (gsize) cpg * j->hw;
  for (gsize item = begin; item < end;)
    {
      gsize b = item / j->groups, g = item % j->groups;
      gsize last = MIN (end, (b + 1) * j->groups); /* stay within one sample */
      int ng = (int) (last - item);
      gsize off = (b * j->c + g * cpg) * j->hw;
      ddim_group_norm_forward (j->x + off, 1, ng * cpg, j->hw, ng, j->eps, j->gamma + g * cpg,
                               j->beta + g * cpg, j->silu, j->y + off);
      item = last;
      (void) plane;
    }
}

void
ddim_group_norm_forward_threaded (const float *x, int n, int c, int hw, int groups, float eps,
                                  const float *gamma, const float *beta, gboolean silu, float *y,
                                  DdimArena *arena)
{
  GroupNormJob job = { x, c, hw, groups, eps, gamma, beta, silu, y };
  gsize per_item = (gsize) (c / groups) * hw;
  ddim_parallel_for (arena->parallel, (gsize) n * groups, MAX (1, 32768 / per_item),
                     group_norm_range, &job);
}
