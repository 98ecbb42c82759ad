/* Neural-network operators on planar float tensors (NCHW, row-major).
 * Internal to libddim. Each op's file keeps its forward and backward. */
#pragma once

#include <glib.h>

#include "ops/arena.h"

G_BEGIN_DECLS

/* Backward passes (vector-Jacobian products). Conventions, for every op:
 * - @dy is the gradient of the op's output;
 * - input gradients (dx) are OVERWRITTEN, parameter gradients (dweight,
 *   dbias, dgamma, dbeta, ...) are ACCUMULATED (+=);
 * - any gradient pointer may be NULL: not wanted, its work is skipped;
 * - what the backward needs is recomputed from the forward's input @x (and
 *   the parameters), nothing is saved by the forward; scratch comes from
 *   @arena (mark/release), never from malloc. */

/* Forward-mode derivatives (Jacobian-vector products). Conventions, for
 * every op: @x is the primal input (where the Jacobian is taken), @dx a
 * tangent of it, @dy receives the tangent of the output (overwritten);
 * parameters are constants. Linear ops (convolution, linear layer) need no
 * primal: their JVP is the op without its bias. */

/* Convolution, y = conv(x, weight) + bias. weight [cout, cin, k, k];
 * padding @pad_tl on top/left and @pad_br on bottom/right (zeros).
 * Output size: (h + pad_tl + pad_br - k) / stride + 1. Scratch from @arena
 * (bounded: the column buffer is built a band of output rows at a time). */
void ddim_conv2d_forward (const float *x, int n, int cin, int h, int w,
                          const float *weight, const float *bias, int cout, int k,
                          int stride, int pad_tl, int pad_br, float *y, DdimArena *arena);
/* y += conv(x) without bias: @y holds what the caller folded in (bias,
 * residual, time embedding), saving a pass over the output. */
void ddim_conv2d_forward_accumulate (const float *x, int n, int cin, int h, int w,
                                     const float *weight, int cout, int k, int stride,
                                     int pad_tl, int pad_br, float *y, DdimArena *arena);
int  ddim_conv2d_out_size (int in, int k, int stride, int pad_tl, int pad_br);

/* Backward of ddim_conv2d_forward: dx = conv^T (dy) (col2im of W^T dy, built
 * a band of output rows at a time like the forward), dweight += dy col^T,
 * dbias += sum dy. @x is needed only for @dweight, @weight only for @dx.
 * @dx must not alias @x or @dy. */
void ddim_conv2d_backward (const float *x, int n, int cin, int h, int w,
                           const float *weight, int cout, int k, int stride,
                           int pad_tl, int pad_br, const float *dy, float *dx,
                           float *dweight, float *dbias, DdimArena *arena);
/* The same with a given band of @band_rows output rows (<= 0: automatic, as
 * ddim_conv2d_backward). For tests. */
void ddim_conv2d_backward_band (const float *x, int n, int cin, int h, int w,
                                const float *weight, int cout, int k, int stride,
                                int pad_tl, int pad_br, const float *dy, float *dx,
                                float *dweight, float *dbias, int band_rows,
                                DdimArena *arena);

/* JVP of ddim_conv2d_forward: dy = conv(dx, weight), no bias. */
void ddim_conv2d_jvp (const float *dx, int n, int cin, int h, int w, const float *weight,
                      int cout, int k, int stride, int pad_tl, int pad_br, float *dy,
                      DdimArena *arena);

/* Group normalisation over (channels/groups * hw) per sample and group,
 * then y = xhat * gamma + beta, then SiLU when @silu. @y may equal @x. */
void ddim_group_norm_forward (const float *x, int n, int c, int hw, int groups, float eps,
                              const float *gamma, const float *beta, gboolean silu, float *y);

/* The same, split over (sample, group) pairs across @arena's threads. */
void ddim_group_norm_forward_threaded (const float *x, int n, int c, int hw, int groups, float eps,
                                       const float *gamma, const float *beta, gboolean silu,
                                       float *y, DdimArena *arena);

/* Backward of ddim_group_norm_forward (mean/var recomputed from @x). @dy is
 * the gradient of the op's output, after the SiLU when @silu (the pre-SiLU
 * value is recomputed; @beta is needed then). @dx may equal @dy but not @x. */
void ddim_group_norm_backward (const float *x, int n, int c, int hw, int groups, float eps,
                               const float *gamma, const float *beta, gboolean silu,
                               const float *dy, float *dx, float *dgamma, float *dbeta);

/* JVP of ddim_group_norm_forward at @x: with xhat = (x - mean) inv,
 *   dv = gamma inv (dx - mean_g (dx) - xhat mean_g (xhat dx)),
 * then dy = dv silu'(v) when @silu (v = xhat gamma + beta; @beta needed).
 * @dy may equal @dx but not @x. */
void ddim_group_norm_jvp (const float *x, const float *dx, int n, int c, int hw, int groups,
                          float eps, const float *gamma, const float *beta, gboolean silu,
                          float *dy);

/* SiLU in place: x * sigmoid(x). */
void ddim_silu_forward (float *x, gsize count);

/* dx = dy * silu'(x), @x the SiLU's input. Elementwise: @dx may equal @dy
 * (or @x). */
void ddim_silu_backward (const float *x, const float *dy, float *dx, gsize count);

/* JVP of the SiLU at @x: dy = dx * silu'(x). The Jacobian of an
 * elementwise op is diagonal, so this is also its VJP. @dy may equal @dx or
 * @x. */
void ddim_silu_jvp (const float *x, const float *dx, float *dy, gsize count);

/* y[n, out] = x[n, in] W^T + b, W [out, in] (PyTorch Linear layout). */
void ddim_linear_forward (const float *x, int n, int in, const float *weight,
                          const float *bias, int out, float *y);

/* JVP of ddim_linear_forward: dy = dx W^T, no bias. */
void ddim_linear_jvp (const float *dx, int n, int in, const float *weight, int out, float *dy);

/* dx = dy W, dweight += dy^T x, dbias += sum_n dy. @dx must not alias. */
void ddim_linear_backward (const float *x, int n, int in, const float *weight, int out,
                           const float *dy, float *dx, float *dweight, float *dbias);

/* Self-attention block of diffusers (Attention with residual connection):
 * x <- (x + Wo softmax(q k^T / sqrt(d)) v + bo) / rescale, tokens = spatial
 * positions, q/k/v from GroupNorm(x) (skipped when @gn_gamma is NULL).
 * In place on @x [n, c, hw]. @heads divides @c. */
typedef struct {
  const float *gn_gamma, *gn_beta;
  int          gn_groups;
  float        gn_eps;
  const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
  int          heads;
  float        rescale;
} DdimAttentionParams;

void ddim_attention_forward (float *x, int n, int c, int hw, const DdimAttentionParams *p,
                             DdimArena *arena);
/* The same with tiles of @q_tile query rows and blocks of @k_tile keys
 * (<= 0: automatic; @k_tile >= @hw: the whole softmax at once). For tests. */
void ddim_attention_forward_tiles (float *x, int n, int c, int hw,
                                   const DdimAttentionParams *p, int q_tile, int k_tile,
                                   DdimArena *arena);

/* Parameter gradients of the attention block (accumulated); any may be NULL. */
typedef struct {
  float *gn_gamma, *gn_beta;
  float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
} DdimAttentionGrads;

/* Backward of ddim_attention_forward. @x is the block's input (before the
 * in-place forward); group norm, q, k, v and the softmax are recomputed,
 * the score matrix a block of query rows at a time (bounded scratch). Gradient
 * flows through the residual, the projections, the softmax and the group
 * norm. @grads may be NULL. @dx may equal @x or @dy. */
void ddim_attention_backward (const float *x, int n, int c, int hw,
                              const DdimAttentionParams *p, const float *dy, float *dx,
                              DdimAttentionGrads *grads, DdimArena *arena);
/* The same with blocks of @block_rows query rows (<= 0: automatic). For tests. */
void ddim_attention_backward_block (const float *x, int n, int c, int hw,
                                    const DdimAttentionParams *p, const float *dy,
                                    float *dx, DdimAttentionGrads *grads, int block_rows,
                                    DdimArena *arena);

/* JVP of ddim_attention_forward at @x (the block's input): per head,
 *   dS = scale (dQ^T K + Q^T dK),  dP = P (dS - rowsum (P dS)),
 *   dO = dV P^T + V dP^T,  dy = (dx + Wo dO) / rescale,
 * with dQ, dK, dV the projections (no bias) of the group norm's JVP. Score
 * rows in blocks (bounded scratch). @dy may equal @dx. */
void ddim_attention_jvp (const float *x, const float *dx, int n, int c, int hw,
                         const DdimAttentionParams *p, float *dy, DdimArena *arena);

/* Nearest-neighbour 2x upsampling: y [n, c, 2h, 2w]. */
void ddim_upsample_nearest2x_forward (const float *x, int n, int c, int h, int w, float *y);
/* Its adjoint: dx [n, c, h, w] (h, w of x) = sums of the 2x2 blocks of dy. */
void ddim_upsample_nearest2x_backward (const float *dy, int n, int c, int h, int w, float *dx);

/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * emb [n, dim] from timesteps t [n]; [sin, cos] halves, or [cos, sin] when
 * @flip_sin_to_cos. Computed in float32 like the reference. */
void ddim_timestep_embedding_forward (const float *t, int n, int dim, gboolean flip_sin_to_cos,
                                      float freq_shift, float *emb);
/* dt [n] = d(sum demb * emb)/dt (overwritten). */
void ddim_timestep_embedding_backward (const float *t, int n, int dim, gboolean flip_sin_to_cos,
                                       float freq_shift, const float *demb, float *dt);

G_END_DECLS
