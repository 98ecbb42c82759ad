/* The packed-panel GEMM (see packed-gemm.h): a 12 x 32 register block per
 * step, 24 accumulators of 16 floats, each step of k one broadcast of A per
 * row and two loads of B (the shape BLIS uses for float on AVX-512). A
 * portable version of the same block serves CPUs without AVX-512. */
#include "ops/packed-gemm.h"
#include "ops/simd.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_AVX512_KERNEL 1
#include <immintrin.h>
#endif

#define MR DDIM_PACKED_MR
#define NR DDIM_PACKED_NR

typedef void (*KernelFunc) (int k, const float *a, const float *b, float *c, gsize ldc);

#pragma GCC push_options
#pragma GCC optimize ("O3")

/* c[MR][NR] = sum_i a[i][MR] (x) b[i][NR]. */
DDIM_SIMD_CLONES static void
kernel_portable (int k, const float *restrict a, const float *restrict b, float *restrict c,
                 gsize ldc)
{
  float acc[MR][NR] = { { 0 } };
  for (int i = 0; i < k; i++, a += MR, b += NR)
    for (int r = 0; r < MR; r++)
      for (int j = 0; j < NR; j++)
        acc[r][j] += a[r] * b[j];
  for (int r = 0; r < MR; r++)
    for (int j = 0; j < NR; j++)
      c[(gsize) r * ldc + j] = acc[r][j];
}

#ifdef HAVE_AVX512_KERNEL
__attribute__ ((target ("avx512f")))
static void
kernel_avx512 (int k, const float *restrict a, const float *restrict b, float *restrict c,
               gsize ldc)
{
#define ROW_DECL(r) __m512 c##r##0 = _mm512_setzero_ps (), c##r##1 = _mm512_setzero_ps ();
#define ROW_FMA(r) \
  { \
    __m512 ar = _mm512_set1_ps (a[r]); \
    c##r##0 = _mm512_fmadd_ps (ar, b0, c##r##0); \
    c##r##1 = _mm512_fmadd_ps (ar, b1, c##r##1); \
  }
#define ROW_STORE(r) \
  _mm512_storeu_ps (c + (gsize) (r) * ldc, c##r##0); \
  _mm512_storeu_ps (c + (gsize) (r) * ldc + 16, c##r##1);
#define ROWS(X) X (0) X (1) X (2) X (3) X (4) X (5) X (6) X (7) X (8) X (9) X (10) X (11)
  G_STATIC_ASSERT (MR == 12 && NR == 32);
  ROWS (ROW_DECL)
  for (int i = 0; i < k; i++, a += MR, b += NR)
    {
      __m512 b0 = _mm512_loadu_ps (b), b1 = _mm512_loadu_ps (b + 16);
      ROWS (ROW_FMA)
    }
  ROWS (ROW_STORE)
#undef ROW_DECL
#undef ROW_FMA
#undef ROW_STORE
#undef ROWS
}
#endif

#pragma GCC pop_options

static KernelFunc
pick_kernel (void)
{
#ifdef HAVE_AVX512_KERNEL
  if (__builtin_cpu_supports ("avx512f"))
    return kernel_avx512;
#endif
  return kernel_portable;
}

static void
packed_gemm (KernelFunc kernel, int m, int n, int k, const float *a, const float *b, float *c,
             gsize ldc)
{
  g_return_if_fail (a != NULL && b != NULL && c != NULL);
  g_return_if_fail (ldc >= ddim_packed_round (MAX (n, 0), NR));
  if (m <= 0 || n <= 0)
    return;
  int mp = (m + MR - 1) / MR, np = (n + NR - 1) / NR;
  /* A's panel (MR x k, at most 24 KiB for k = 512) stays in L1 while B's
   * panels stream past it. */
  for (int ip = 0; ip < mp; ip++)
    {
      const float *ap = a + (gsize) ip * k * MR;
      float *cp = c + (gsize) ip * MR * ldc;
      for (int jp = 0; jp < np; jp++)
        {
          if (k <= 0)
            {
              for (int r = 0; r < MR; r++)
                for (int j = 0; j < NR; j++)
                  cp[(gsize) r * ldc + (gsize) jp * NR + j] = 0.f;
              continue;
            }
          kernel (k, ap, b + (gsize) jp * k * NR, cp + (gsize) jp * NR, ldc);
        }
    }
}

void
ddim_packed_gemm (int m, int n, int k, const float *a, const float *b, float *c, gsize ldc)
{
  packed_gemm (pick_kernel (), m, n, k, a, b, c, ldc);
}

void
ddim_packed_gemm_portable (int m, int n, int k, const float *a, const float *b, float *c,
                           gsize ldc)
{
  packed_gemm (kernel_portable, m, n, k, a, b, c, ldc);
}
