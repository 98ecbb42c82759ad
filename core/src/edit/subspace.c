/* Dense helpers for subspace iteration (see subspace.h). The vectors are
 * long (an image or an h-space tensor) and few, so everything is row-wise
 * with double accumulators; the k x k problems are solved by Jacobi, which
 * is accurate for the tiny symmetric matrices involved. */
#include <math.h>
#include <string.h>

#include "ddim/sampler.h"
#include "edit/subspace.h"

static double
dot_rows (const float *a, const float *b, gsize d)
{
  double s = 0;
  for (gsize i = 0; i < d; i++)
    s += (double) a[i] * b[i];
  return s;
}

void
ddim_orthonormalize_rows (float *v, int k, gsize d, guint64 seed)
{
  for (int i = 0; i < k; i++)
    {
      float *vi = v + (gsize) i * d;
      double before = sqrt (dot_rows (vi, vi, d));
      for (int attempt = 0; attempt < 4; attempt++)
        {
          /* Two passes: one Gram-Schmidt sweep loses orthogonality in
           * float32 when the row was nearly dependent. */
          for (int pass = 0; pass < 2; pass++)
            for (int j = 0; j < i; j++)
              {
                const float *vj = v + (gsize) j * d;
                float c = (float) dot_rows (vi, vj, d);
                for (gsize m = 0; m < d; m++)
                  vi[m] -= c * vj[m];
              }
          double nrm = sqrt (dot_rows (vi, vi, d));
          if (nrm > 1e-6 * before && nrm > 0)
            {
              for (gsize m = 0; m < d; m++)
                vi[m] = (float) (vi[m] / nrm);
              break;
            }
          /* Dependent on the rows before it: start again from noise. */
          ddim_randn (seed + 0x9e3779b97f4a7c15ULL * (guint64) (i + 1) + (guint64) attempt, vi, d);
          before = sqrt (dot_rows (vi, vi, d));
        }
    }
}

void
ddim_gram_rows (const float *a, const float *b, int k, gsize d, double *g)
{
  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++)
      g[i * k + j] = dot_rows (a + (gsize) i * d, b + (gsize) j * d, d);
}

void
ddim_symmetric_eigen (double *a, int k, double *w, double *q)
{
  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++)
      q[i * k + j] = i == j ? 1.0 : 0.0;
  for (int sweep = 0; sweep < 100; sweep++)
    {
      double off = 0, diag = 0;
      for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++)
          if (i != j)
            off += a[i * k + j] * a[i * k + j];
          else
            diag += a[i * k + i] * a[i * k + i];
      if (off <= 1e-30 * diag || off == 0)
        break;
      for (int p = 0; p < k; p++)
        for (int r = p + 1; r < k; r++)
          {
            double apr = a[p * k + r];
            if (apr == 0)
              continue;
            double theta = (a[r * k + r] - a[p * k + p]) / (2 * apr);
            double t = (theta >= 0 ? 1.0 : -1.0) / (fabs (theta) + sqrt (theta * theta + 1));
            double c = 1 / sqrt (t * t + 1), s = t * c;
            for (int m = 0; m < k; m++)
              {
                double amp = a[m * k + p], amr = a[m * k + r];
                a[m * k + p] = c * amp - s * amr;
                a[m * k + r] = s * amp + c * amr;
              }
            for (int m = 0; m < k; m++)
              {
                double apm = a[p * k + m], arm = a[r * k + m];
                a[p * k + m] = c * apm - s * arm;
                a[r * k + m] = s * apm + c * arm;
              }
            for (int m = 0; m < k; m++)
              {
                double qmp = q[m * k + p], qmr = q[m * k + r];
                q[m * k + p] = c * qmp - s * qmr;
                q[m * k + r] = s * qmp + c * qmr;
              }
          }
    }
  for (int i = 0; i < k; i++)
    w[i] = a[i * k + i];
  /* Sort descending, columns of q along. */
  for (int i = 0; i < k; i++)
    {
      int best = i;
      for (int j = i + 1; j < k; j++)
        if (w[j] > w[best])
          best = j;
      if (best == i)
        continue;
      double tw = w[i];
      w[i] = w[best];
      w[best] = tw;
      for (int m = 0; m < k; m++)
        {
          double tq = q[m * k + i];
          q[m * k + i] = q[m * k + best];
          q[m * k + best] = tq;
        }
    }
}

void
ddim_rotate_rows (float *v, int k, gsize d, const double *q)
{
  g_autofree double *acc = g_new (double, k);
  for (gsize m = 0; m < d; m++)
    {
      for (int i = 0; i < k; i++)
        {
          double s = 0;
          for (int j = 0; j < k; j++)
            s += q[j * k + i] * v[(gsize) j * d + m];
          acc[i] = s;
        }
      for (int i = 0; i < k; i++)
        v[(gsize) i * d + m] = (float) acc[i];
    }
}
