/* Pixel buffers <-> model tensors, without any image library: what a host
 * application (the GIMP plug-in) needs around libddim.
 *
 *  - Pixel buffers are interleaved RGBA floats, row-major, 4 floats per
 *    pixel, values 0..1 in the image's own (gamma-encoded) colour space, as
 *    GEGL's "R'G'B'A float" gives them.
 *  - Tensors are planar [C, H, W] floats in [-1, 1] (pixel value v maps to
 *    2v - 1, as ddim/image.h's v/127.5 - 1 for 8-bit values), C = 1 or 3.
 *  - Masks and alpha planes are W*H floats in 0..1.
 *
 * Nothing here allocates except where it says so; every function takes
 * sizes >= 1 and buffers that do not overlap unless it says otherwise. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  /* Each output pixel takes the source pixel under its centre (shows a
   * latent's pixels as blocks). */
  DDIM_RESIZE_NEAREST,
  /* Upsampling (and same size): bilinear between pixel centres, edges
   * clamped. Downsampling: area average (each output pixel is the mean of
   * the source area it covers, partial pixels weighted by their overlap).
   * Chosen per axis. Same size is the identity. */
  DDIM_RESIZE_SMOOTH
} DdimResizeFilter;

/* Rec. 709 luma of gamma-encoded R'G'B' (the weights ddim_image_load uses);
 * exactly r when r = g = b. */
float ddim_pixels_luminance (float r, float g, float b);

/* RGBA pixels -> tensor of @channels (1: luminance; 3: R, G, B). Alpha is
 * ignored (colour values are taken as stored, not premultiplied). */
void  ddim_pixels_rgba_to_tensor (const float *rgba, int width, int height, int channels,
                                  float *chw);

/* Tensor -> RGBA pixels: 1 channel is replicated into R, G and B; values
 * are mapped back to 0..1 and clamped. Alpha comes from @alpha (W*H) or is
 * 1 when @alpha is NULL. */
void  ddim_pixels_tensor_to_rgba (const float *chw, int channels, int width, int height,
                                  const float *alpha, float *rgba);

/* The alpha channel of RGBA pixels (W*H floats, into @alpha). */
void  ddim_pixels_rgba_get_alpha (const float *rgba, int width, int height, float *alpha);

/* Resizes planar [channels, height, width] @src to [channels, dst_height,
 * dst_width] @dst. */
void  ddim_pixels_resize (const float *src, int channels, int width, int height, float *dst,
                          int dst_width, int dst_height, DdimResizeFilter filter);

/* The smallest multiples of @factor (>= 1) that are >= @width, @height. */
void  ddim_pixels_round_up_size (int width, int height, int factor, int *out_width,
                                 int *out_height);

/* Pads planar @src on the right and bottom to @dst_width x @dst_height
 * (>= the source size) by repeating the last column and row. */
void  ddim_pixels_pad (const float *src, int channels, int width, int height, float *dst,
                       int dst_width, int dst_height);

/* The top-left @dst_width x @dst_height (<= the source size) of @src. */
void  ddim_pixels_crop (const float *src, int channels, int width, int height, float *dst,
                        int dst_width, int dst_height);

/* Detail transfer for results computed at a smaller (model) size:
 *   out = clamp (original + upsample (edited - reference), -1, 1)
 * @original and @out are [channels, height, width]; @edited and @reference
 * [channels, small_height, small_width] (upsampled with
 * DDIM_RESIZE_SMOOTH). Detail the model cannot hold (everything in
 * @original that @reference lacks) is kept; only the model's change is
 * added. @out may alias @original. */
void  ddim_pixels_detail_transfer (const float *original, int channels, int width, int height,
                                   const float *edited, const float *reference, int small_width,
                                   int small_height, float *out);

/* Adds a change made by the model to RGBA pixels, in place, through a mask
 * (Semantic edit's "original + upsample (edited - reconstructed)" in pixel
 * space):
 *   rgba[c] = clamp (rgba[c] + mask * delta[c] / 2, 0, 1)
 * @delta is planar [channels, height, width] in tensor units (a change of 2
 * spans 0..1); 1 channel is added to R, G and B alike, 3 channels to R, G,
 * B. Alpha is kept. A colour value whose change is 0 (mask 0 or delta 0) is
 * left exactly as it was, not clamped, so pixels outside the mask and a
 * zero delta reproduce the input bit for bit. NULL @mask: 1 everywhere. */
void  ddim_pixels_rgba_add_delta (float *rgba, int width, int height, const float *delta,
                                  int channels, const float *mask);

/* out = a + t * (b - a) for @n floats (t 0 gives @a exactly, 1 gives @b).
 * @out may alias @a or @b. */
void  ddim_pixels_mix (const float *a, const float *b, gsize n, double t, float *out);

/* Blends @result (in place) over @base through @mask:
 *   result = base + mask * (result - base)
 * all planar [channels, height, width], @mask W*H. A NULL @mask leaves
 * @result as it is. */
void  ddim_pixels_blend_mask (float *result, const float *base, const float *mask, int channels,
                              int width, int height);

/* Multiplies @alpha (W*H) by @mask (W*H) in place. */
void  ddim_pixels_apply_mask (float *alpha, const float *mask, int width, int height);

/* Maps latent noise (about N(0, 1)) to a visible tensor in [-1, 1]:
 * x / 3, clamped (+-3 sigma spans the range; 0 is mid-gray). @out may
 * alias @latent. */
void  ddim_pixels_latent_to_display (const float *latent, gsize n, float *out);

G_END_DECLS
