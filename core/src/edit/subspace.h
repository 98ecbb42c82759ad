/* Small dense linear algebra for subspace iteration (Jacobian SVD and PCA):
 * orthonormalising a few long vectors and the eigen-decomposition of the
 * small Gram matrix of a Rayleigh-Ritz step. Internal to libddim. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Orthonormalises the @k rows of @v [k, d] in place (modified Gram-Schmidt
 * with a second pass, sums in double). A row that vanishes against the
 * others is replaced by a fresh vector from @seed and orthonormalised in
 * turn. */
void ddim_orthonormalize_rows (float *v, int k, gsize d, guint64 seed);

/* G[i][j] = <a_i, b_j> for rows of @a [k, d] and @b [k, d] (double). */
void ddim_gram_rows (const float *a, const float *b, int k, gsize d, double *g);

/* Eigen-decomposition of the symmetric @k x @k matrix @a (destroyed) by
 * cyclic Jacobi rotations: eigenvalues in @w, descending, and the matching
 * eigenvectors as the columns of @q [k, k]. */
void ddim_symmetric_eigen (double *a, int k, double *w, double *q);

/* Rows of @v [k, d] replaced by Q^T v: row i = sum_j q[j][i] v_j. */
void ddim_rotate_rows (float *v, int k, gsize d, const double *q);

G_END_DECLS
