/* Sinusoidal timestep embedding, computed in float32 in the same order as
 * diffusers (exponent, exp, product, sin/cos) so results match bit for bit
 * as far as libm allows. */
#include <math.h>

#include "ops/ops.h"

void
ddim_timestep_embedding_forward (const float *t, int n, int dim, gboolean flip_sin_to_cos,
                                 float freq_shift, float *emb)
{
  int half = dim / 2;
  for (int b = 0; b < n; b++)
    {
      float *e = emb + (gsize) b * dim;
      for (int i = 0; i < half; i++)
        {
          float exponent = (float) i * (float) (-log (10000.0));
          exponent = exponent / ((float) half - freq_shift);
          float arg = t[b] * expf (exponent);
          float s = sinf (arg), co = cosf (arg);
          e[flip_sin_to_cos ? half + i : i] = s;
          e[flip_sin_to_cos ? i : half + i] = co;
        }
      if (dim % 2 == 1)
        e[dim - 1] = 0.f;
    }
}

/* dt[b] = sum_i demb[sin_i] f_i cos (t f_i) - demb[cos_i] f_i sin (t f_i), with
 * the frequencies f_i computed as in the forward. Overwrites @dt. */
void
ddim_timestep_embedding_backward (const float *t, int n, int dim, gboolean flip_sin_to_cos,
                                  float freq_shift, const float *demb, float *dt)
{
  int half = dim / 2;
  for (int b = 0; b < n; b++)
    {
      const float *e = demb + (gsize) b * dim;
      double acc = 0;
      for (int i = 0; i < half; i++)
        {
          float exponent = (float) i * (float) (-log (10000.0));
          exponent = exponent / ((float) half - freq_shift);
          float f = expf (exponent);
          float arg = t[b] * f;
          float ds = e[flip_sin_to_cos ? half + i : i];
          float dc = e[flip_sin_to_cos ? i : half + i];
          acc += (double) f * (ds * cosf (arg) - dc * sinf (arg));
        }
      dt[b] = (float) acc;
    }
}
