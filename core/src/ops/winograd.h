/* Winograd convolution for 3x3, stride 1, padding 1 (Lavin & Gray's
 * F(m x m, 3 x 3)): each m x m output tile is A^T [(G g G^T) . (B^T d B)] A
 * with alpha = m + 2, so the convolution becomes alpha^2 independent GEMMs
 * (one per transformed position) of [cout, cin] x [cin, tiles].
 * Internal to libddim. */
#pragma once

#include <glib.h>

#include "ops/arena.h"

G_BEGIN_DECLS

/* Output tile size of the variant used for an @h x @w map: 4 (F(4,3), from
 * 32 x 32 up), 2 (F(2,3), from 16 x 16) or 0 (smaller: im2col is faster). */
int  ddim_winograd_tile_for (int h, int w);

/* y (+)= conv3x3(x) with padding 1, stride 1, by F(@m x @m, 3 x 3), @m 2
 * or 4. With @accumulate, @y holds initial values (bias folded in by the
 * caller) and @bias must be NULL; otherwise y = conv + @bias (may be NULL).
 * x [n, cin, h, w], weight [cout, cin, 3, 3], y [n, cout, h, w]. The
 * transformed weights come from @arena, each thread's panels from the heap;
 * the work runs on @arena's threads (packed-gemm.h, not the BLAS). */
void ddim_winograd_conv3x3 (const float *x, int n, int cin, int h, int w, const float *weight,
                            const float *bias, int cout, float *y, gboolean accumulate, int m,
                            DdimArena *arena);

G_END_DECLS
