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
