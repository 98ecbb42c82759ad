/* A GEMM on operands stored as register-sized panels, for the Winograd
 * convolution: its input transform writes B in this layout directly and
 * its weight transform writes A so, so no packing pass runs per GEMM (in
 * OpenBLAS the packing of both operands and the zeroing of C took a
 * quarter of the GEMM time at these sizes). Internal to libddim. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Rows of A (output channels) and columns of B (tiles) per panel. */
#define DDIM_PACKED_MR 12
#define DDIM_PACKED_NR 32

static inline gsize
ddim_packed_round (gsize n, gsize to)
{
  return (n + to - 1) / to * to;
}

/* Index of a[row][i] in A packed for @k columns: panels of MR rows, each
 * [k][MR]. Rows up to ddim_packed_round (m, MR) exist (pad with zeros). */
static inline gsize
ddim_packed_a_index (int row, int i, int k)
{
  return (gsize) (row / DDIM_PACKED_MR) * k * DDIM_PACKED_MR + (gsize) i * DDIM_PACKED_MR
         + row % DDIM_PACKED_MR;
}

/* Index of b[i][col] in B packed for @k rows: panels of NR columns, each
 * [k][NR]. Columns up to ddim_packed_round (n, NR) exist (pad with zeros). */
static inline gsize
ddim_packed_b_index (int i, int col, int k)
{
  return (gsize) (col / DDIM_PACKED_NR) * k * DDIM_PACKED_NR + (gsize) i * DDIM_PACKED_NR
         + col % DDIM_PACKED_NR;
}

/* c = a b for a [m, k] and b [k, n] in the packed layouts above; c is
 * row-major with row stride @ldc >= round (n, NR), and every row and column
 * up to the rounded sizes is written (the padding gets the padding's
 * products). One thread; AVX-512 where the CPU has it. */
void ddim_packed_gemm (int m, int n, int k, const float *a, const float *b, float *c,
                       gsize ldc);
/* The same with the portable block only (what CPUs without AVX-512 run;
 * for tests). */
void ddim_packed_gemm_portable (int m, int n, int k, const float *a, const float *b, float *c,
                                gsize ldc);

G_END_DECLS
