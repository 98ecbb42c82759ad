/* Neural-network operators on planar float tensors (NCHW, row-major).
 * Internal to libddim. Each op's file keeps its forward and backward. */
#pragma once

#include <glib.h>

#include "ops/arena.h"

G_BEGIN_DECLS

/* Convolution, y = conv(x, weight) + bias. weight [cout, cin, k, k];
 * padding @pad_tl on top/left and @pad_br on bottom/right (zeros).
 * Output size: (h + pad_tl + pad_br - k) / stride + 1. Scratch from @arena
 * (bounded: the column buffer is built a band of output rows at a time). */
void ddim_conv2d_forward (const float *x, int n, int cin, int h, int w,
                          const float *weight, const float *bias, int cout, int k,
                          int stride, int pad_tl, int pad_br, float *y, DdimArena *arena);
int  ddim_conv2d_out_size (int in, int k, int stride, int pad_tl, int pad_br);

/* Group normalisation over (channels/groups * hw) per sample and group,
 * then y = xhat * gamma + beta, then SiLU when @silu. @y may equal @x. */
void ddim_group_norm_forward (const float *x, int n, int c, int hw, int groups, float eps,
                              const float *gamma, const float *beta, gboolean silu, float *y);

/* SiLU in place: x * sigmoid(x). */
void ddim_silu_forward (float *x, gsize count);

/* y[n, out] = x[n, in] W^T + b, W [out, in] (PyTorch Linear layout). */
void ddim_linear_forward (const float *x, int n, int in, const float *weight,
                          const float *bias, int out, float *y);

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

/* Nearest-neighbour 2x upsampling: y [n, c, 2h, 2w]. */
void ddim_upsample_nearest2x_forward (const float *x, int n, int c, int h, int w, float *y);

/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * emb [n, dim] from timesteps t [n]; [sin, cos] halves, or [cos, sin] when
 * @flip_sin_to_cos. Computed in float32 like the reference. */
void ddim_timestep_embedding_forward (const float *t, int n, int dim, gboolean flip_sin_to_cos,
                                      float freq_shift, float *emb);

G_END_DECLS
