/* The exponential eight floats at a time, written once with GCC/Clang
 * vector extensions and compiled twice: for the build's baseline (SSE2 on
 * x86-64) and, where the CPU has it, for AVX2; each call picks.
 *
 * exp(x) = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 in
 * [-ln2/2, ln2/2]: ln 2 is split into a 16-bit head (n ln2_hi is exact for
 * |n| < 256) and a tail, e^r is its Taylor polynomial of degree 7 (the
 * remainder r^8/8! < 6e-9 relative: below 0.1 ulp), and 2^n is applied as
 * two exact power-of-two factors 2^(n/2) 2^(n - n/2), so results near
 * overflow come out right without special cases. Results that would be
 * subnormal (x < ln FLT_MIN) are 0 instead: arithmetic on subnormals takes
 * a slow microcode path on x86 (3x the time of a softmax row whose scores
 * spread widely), and for a probability the difference (< 1.2e-38) does
 * not matter. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops/softmax.h"

/* Every helper taking or returning a vector is inlined, so the warning that
 * 32-byte vectors pass differently with and without AVX does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

/* Multiply-adds may fuse (where the target has FMA: one rounding fewer,
 * and fewer instructions). */
#if defined(__clang__)
#pragma clang fp contract (fast)
#elif defined(__GNUC__)
#pragma GCC optimize ("fp-contract=fast")
#endif

typedef float   v8f __attribute__ ((vector_size (32)));
typedef int32_t v8i __attribute__ ((vector_size (32)));

#define LANES 8
#define KERNEL static inline __attribute__ ((always_inline))

/* Below EXP_LO the result is 0 (it would be subnormal); such lanes compute
 * exp(EXP_DUMMY) meanwhile, which stays normal. exp(89) is above FLT_MAX:
 * clamping there keeps n in [-126, 129]. */
#define EXP_LO (-87.3365402f)   /* the least x with exp(x) >= FLT_MIN */
#define EXP_DUMMY (-80.f)
#define EXP_HI 89.f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693145751953125f          /* 45426 / 65536 */
#define LN2_LO 1.42860682030941723e-6f     /* ln 2 - LN2_HI */
/* Adding 1.5 * 2^23 rounds a float of magnitude < 2^22 to an integer, which
 * is then the low bits of the sum's representation. */
#define ROUND_MAGIC 12582912.f

KERNEL v8f
splat (float a)
{
  return (v8f) { a, a, a, a, a, a, a, a };
}

KERNEL v8f
select8 (v8i mask, v8f if_set, v8f if_clear)
{
  return (v8f) ((mask & (v8i) if_set) | (~mask & (v8i) if_clear));
}

KERNEL v8f
load8 (const float *p)
{
  v8f v;
  memcpy (&v, p, sizeof v);
  return v;
}

KERNEL void
store8 (float *p, v8f v)
{
  memcpy (p, &v, sizeof v);
}

KERNEL v8f
exp8 (v8f x)
{
  /* A NaN fails both comparisons and goes through as NaN (its n is
   * garbage, but NaN times anything is NaN). */
  v8i tiny = x < EXP_LO;
  v8f xc = select8 (tiny, splat (EXP_DUMMY), x);
  xc = select8 (xc > EXP_HI, splat (EXP_HI), xc);

  v8f t = xc * LOG2E + ROUND_MAGIC;
  v8f nf = t - ROUND_MAGIC;
  v8i n = (v8i) t - (v8i) splat (ROUND_MAGIC);
  v8f r = xc - nf * LN2_HI;
  r = r - nf * LN2_LO;

  v8f p = splat (1.f / 5040.f);
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  v8f y = 1.f + (r + (r * r) * p);

  v8i n1 = n >> 1;
  v8i n2 = n - n1;
  v8f s1 = (v8f) ((n1 + 127) << 23);
  v8f s2 = (v8f) ((n2 + 127) << 23);
  y = (y * s1) * s2;
  return (v8f) (~tiny & (v8i) y);
}

KERNEL float
hmax8 (v8f v)
{
  float m = v[0];
  for (int i = 1; i < LANES; i++)
    m = v[i] > m ? v[i] : m;
  return m;
}

KERNEL double
hsum8 (v8f v)
{
  double s = 0;
  for (int i = 0; i < LANES; i++)
    s += v[i];
  return s;
}

/* The bodies. A tail shorter than a vector goes through the same kernel
 * in a padded copy, so every element gets the same arithmetic. */

KERNEL void
vexp_body (const float *x, float *y, gsize n)
{
  gsize i = 0;
  for (; i + LANES <= n; i += LANES)
    store8 (y + i, exp8 (load8 (x + i)));
  if (i < n)
    {
      float pad[LANES] = { 0 };
      memcpy (pad, x + i, (n - i) * sizeof (float));
      store8 (pad, exp8 (load8 (pad)));
      memcpy (y + i, pad, (n - i) * sizeof (float));
    }
}

KERNEL float
vmax_body (const float *x, gsize n)
{
  v8f m = splat (-INFINITY);
  gsize i = 0;
  for (; i + LANES <= n; i += LANES)
    {
      v8f v = load8 (x + i);
      m = select8 (v > m, v, m);
    }
  float best = hmax8 (m);
  for (; i < n; i++)
    best = x[i] > best ? x[i] : best;
  return best;
}

KERNEL double
vexp_shifted_sum_body (float *x, gsize n, float shift)
{
  v8f acc = splat (0.f);
  gsize i = 0;
  for (; i + LANES <= n; i += LANES)
    {
      v8f e = exp8 (load8 (x + i) - shift);
      store8 (x + i, e);
      acc += e;
    }
  if (i < n)
    {
      float pad[LANES];
      for (int j = 0; j < LANES; j++)
        pad[j] = -INFINITY;
      memcpy (pad, x + i, (n - i) * sizeof (float));
      v8f e = exp8 (load8 (pad) - shift);
      store8 (pad, e);
      memcpy (x + i, pad, (n - i) * sizeof (float));
      acc += e;
    }
  return hsum8 (acc);
}

KERNEL void
vscale_body (float *x, gsize n, float a)
{
  gsize i = 0;
  for (; i + LANES <= n; i += LANES)
    store8 (x + i, load8 (x + i) * a);
  for (; i < n; i++)
    x[i] *= a;
}

#define DEFINE_VARIANT(suffix, attr)                                                     \
  attr static void vexp_##suffix (const float *x, float *y, gsize n)                     \
  { vexp_body (x, y, n); }                                                               \
  attr static float vmax_##suffix (const float *x, gsize n)                              \
  { return vmax_body (x, n); }                                                           \
  attr static double vexp_shifted_sum_##suffix (float *x, gsize n, float shift)          \
  { return vexp_shifted_sum_body (x, n, shift); }                                        \
  attr static void vscale_##suffix (float *x, gsize n, float a)                          \
  { vscale_body (x, n, a); }

DEFINE_VARIANT (portable, )

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
DEFINE_VARIANT (avx2, __attribute__ ((target ("avx2,fma"))))

static gboolean
have_avx2 (void)
{
  return __builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma");
}
#define DISPATCH(name, ...) \
  (have_avx2 () ? name##_avx2 (__VA_ARGS__) : name##_portable (__VA_ARGS__))
#else
#define DISPATCH(name, ...) name##_portable (__VA_ARGS__)
#endif

void
ddim_vexp (const float *x, float *y, gsize n)
{
  DISPATCH (vexp, x, y, n);
}

void
ddim_vexp_portable (const float *x, float *y, gsize n)
{
  vexp_portable (x, y, n);
}

float
ddim_vmax (const float *x, gsize n)
{
  g_return_val_if_fail (n > 0, NAN);
  return DISPATCH (vmax, x, n);
}

double
ddim_vexp_shifted_sum (float *x, gsize n, float shift)
{
  return DISPATCH (vexp_shifted_sum, x, n, shift);
}

void
ddim_softmax_rows (float *s, int rows, int cols)
{
  for (int r = 0; r < rows; r++)
    {
      float *row = s + (gsize) r * cols;
      float m = ddim_vmax (row, cols);
      double sum = ddim_vexp_shifted_sum (row, cols, m);
      DISPATCH (vscale, row, cols, (float) (1.0 / sum));
    }
}
