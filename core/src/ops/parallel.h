/* A small fork-join helper for the memory-bound passes between GEMMs
 * (group norm, im2col, bias and residual fills), so the cores OpenBLAS uses
 * for the GEMMs are not left idle in between. Owned by a model; nothing
 * global. */
#pragma once

#include <glib.h>

typedef struct _DdimParallel DdimParallel;

/* @n_threads counts the calling thread; <= 1 runs everything inline. */
DdimParallel *ddim_parallel_new (int n_threads);
void          ddim_parallel_free (DdimParallel *par);
int           ddim_parallel_get_n_threads (DdimParallel *par);

typedef void (*DdimRangeFunc) (gsize begin, gsize end, gpointer data);

/* Calls @func on disjoint ranges covering [0, n_items), in parallel when
 * there is enough work (each range at least @min_items). @par may be NULL.
 * Returns when all ranges are done. */
void ddim_parallel_for (DdimParallel *par, gsize n_items, gsize min_items, DdimRangeFunc func,
                        gpointer data);

/* Between these, the BLAS runs single-threaded while @par's threads call
 * it side by side: its own threads would compete with ours (and
 * busy-wait after each call). Calls nest; the outermost end restores the
 * previous count. Nothing happens when @par has one thread (or the BLAS
 * is not OpenBLAS). The BLAS setting is process-wide, so a model that runs
 * beside others keeps one thread of its own (ddim_unet_set_n_threads). */
void ddim_parallel_blas_begin (DdimParallel *par);
void ddim_parallel_blas_end (DdimParallel *par);

/* y[r][i] = @values[r] (+ @add[r][i] where @add is not NULL) for @rows
 * rows of @len floats: the per-channel initial values that convolutions
 * accumulate onto, written by all threads. @par may be NULL. */
void ddim_parallel_fill_rows (DdimParallel *par, float *y, gsize rows, gsize len,
                              const float *values, const float *add);

/* memmove (@dst, @src, @count floats) by all threads: in parallel pieces
 * when the ranges do not overlap, and when @dst lies below @src (the
 * arena moving results down) in successive stretches of src - dst floats,
 * each copied in parallel pieces; serially otherwise. @par may be NULL. */
void ddim_parallel_move (DdimParallel *par, float *dst, const float *src, gsize count);

/* c[m, n] = alpha a[m, k] b[k, n] + beta c (row-major, no transposes),
 * split into column blocks (or row blocks when n is small) across @par's
 * threads, each calling the BLAS single-threaded. @par may be NULL. */
void ddim_parallel_sgemm (DdimParallel *par, int m, int n, int k, float alpha, const float *a,
                          int lda, const float *b, int ldb, float beta, float *c, int ldc);
