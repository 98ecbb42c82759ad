/* A diffusers UNet2DModel: weights in float32 and the forward pass. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/config.h"

G_BEGIN_DECLS

typedef struct _DdimUNet DdimUNet;

/* Loads @config and the weights file under diffusers' names: safetensors
 * or torch.save (told apart by their first bytes), or an index json of
 * shards (F32/F16/BF16, converted to float32). Every tensor the config
 * implies must be present with its exact shape (both attention key
 * schemes accepted; 1x1 convolutions may be [o, i] or [o, i, 1, 1]);
 * otherwise an error naming the tensor. Tensors the config does not use
 * are ignored. (Other families' names: ddim_model_load.) */
DdimUNet *ddim_unet_new_from_safetensors (const DdimUNetConfig *config, const char *weights_path,
                                          GError **error);
/* Random weights (for benchmarks and tests): N(0, 1/fan_in) for weights,
 * small values for biases, norms near identity. Deterministic in @seed. */
DdimUNet *ddim_unet_new_random (const DdimUNetConfig *config, guint64 seed);
void      ddim_unet_free (DdimUNet *unet);

const DdimUNetConfig *ddim_unet_get_config (DdimUNet *unet);
/* Threads for the passes between GEMMs (default: one per processor); 1
 * when the caller runs several models in parallel itself. */
void      ddim_unet_set_n_threads (DdimUNet *unet, int n_threads);
gsize     ddim_unet_get_n_params (DdimUNet *unet);

/* Parameter table, in a fixed order (diffusers' names, new attention
 * scheme). @data points into the model's storage (owned by the model). */
guint       ddim_unet_get_n_tensors (DdimUNet *unet);
const char *ddim_unet_get_tensor (DdimUNet *unet, guint index, int *ndim, gint64 shape[4],
                                  float **data);
/* NULL when no parameter has that name. */
float      *ddim_unet_lookup_tensor (DdimUNet *unet, const char *name, gsize *n_elements);

/* Checks that @height x @width can go through the model (positive multiples
 * of 2^(levels-1)); a DDIM_ERROR_INVALID error saying so otherwise. */
gboolean  ddim_unet_check_size (DdimUNet *unet, int height, int width, GError **error);

/* out [n, out_channels, h, w] = model(x [n, in_channels, h, w], t [n]).
 * Activations live in an arena owned by @unet and reused by later calls, so
 * one DdimUNet must not run two forwards at once. Fails only on a bad size. */
gboolean  ddim_unet_forward (DdimUNet *unet, const float *x, int n, int height, int width,
                             const float *t, float *out, GError **error);

/* h-space: the mid-block output, [C_mid, height/f, width/f] per sample with
 * f = 2^(levels-1). Sizes for an input of @height x @width. */
void      ddim_unet_hspace_shape (DdimUNet *unet, int height, int width, int *channels,
                                  int *h_height, int *h_width);

/* Optional inputs and outputs of ddim_unet_vjp. Unused pointers are NULL. */
typedef struct {
  const float *hspace_delta; /* added to h before the up pass */
  float *out;                /* model output [n, out_channels, h, w] */
  float *hspace;             /* h before the delta */
  float *grad_x;             /* d/dx sum(w * out), overwritten */
  float *grad_params;        /* d/dparams, ACCUMULATED; ddim_unet_get_n_params floats
                              * in table order (see ddim_unet_get_param_offset) */
  float *grad_hspace;        /* d/dh sum(w * out), overwritten */
  /* When set, called once the forward is done to write the cotangent from
   * the output (for losses of the output: one forward per step instead of
   * two); the @w argument of ddim_unet_vjp is then ignored and may be NULL.
   * Returning FALSE (with @error set) aborts the VJP. */
  gboolean (*cotangent_func) (const float *out, float *w, gsize count, gpointer data,
                              GError **error);
  gpointer cotangent_data;
} DdimUNetVjp;

/* Vector-Jacobian product of the model at (x, t) with cotangent @w
 * (or the one io->cotangent_func makes)
 * [n, out_channels, h, w]: gradients of sum(w * model(x, t)). Keeps the
 * activations the backward needs in a tape owned by @unet. */
gboolean  ddim_unet_vjp (DdimUNet *unet, const float *x, int n, int height, int width,
                         const float *t, const float *w, DdimUNetVjp *io, GError **error);

/* J^T u for J = dh/dx: the gradient of sum(u * h(x, t)) with respect to x
 * (h the mid-block output). @hspace receives h when not NULL. */
gboolean  ddim_unet_hspace_vjp (DdimUNet *unet, const float *x, int n, int height, int width,
                                const float *t, const float *u, float *hspace, float *grad_x,
                                GError **error);

/* The model output with @hspace_delta added to h (NULL: plain forward);
 * @hspace receives h (before the delta) when not NULL. */
gboolean  ddim_unet_forward_hspace (DdimUNet *unet, const float *x, int n, int height, int width,
                                    const float *t, const float *hspace_delta, float *hspace,
                                    float *out, GError **error);

/* The encoder half (time embedding, down and mid blocks) once and the
 * decoder half twice, for h-space editing: @out_plain receives the model
 * output, bit for bit what ddim_unet_forward gives; @out_shifted (when not
 * NULL) the output with @hspace_delta [n, C_mid, h, w] added to h (a copy
 * of @out_plain when @hspace_delta is NULL); @hspace (when not NULL) h
 * before the delta. Costs one forward plus one decoder half. */
gboolean  ddim_unet_forward_pair (DdimUNet *unet, const float *x, int n, int height, int width,
                                  const float *t, const float *hspace_delta, float *hspace,
                                  float *out_plain, float *out_shifted, GError **error);

/* J v for J = dh/dx (h the mid-block output), by forward-mode
 * differentiation of the encoder half: @v [n, in_channels, height, width]
 * is a tangent of x, @jv [n, C_mid, h, w] receives the directional
 * derivative of h; @hspace receives h when not NULL. The time embedding
 * does not depend on x. Uses the same tape as the VJPs. */
gboolean  ddim_unet_hspace_jvp (DdimUNet *unet, const float *x, int n, int height, int width,
                                const float *t, const float *v, float *hspace, float *jv,
                                GError **error);

/* Offset of parameter @name in the flat parameter (and gradient) layout, or
 * -1 when there is none. */
gssize    ddim_unet_get_param_offset (DdimUNet *unet, const char *name);
/* The flat parameter array (n_params floats, owned by @unet). */
float    *ddim_unet_get_params (DdimUNet *unet);

/* Multiply-adds of one forward at the given size (for benchmarks). */
double    ddim_unet_count_macs (DdimUNet *unet, int n, int height, int width);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimUNet, ddim_unet_free)

G_END_DECLS
