/* Image files <-> model tensors, through GdkPixbuf (PNG, JPEG, ... for
 * reading; PNG for writing). Tensors are planar float [C,H,W] with values in
 * [-1,1] (pixel value v in 0..255 maps to v/127.5 - 1), C = 1 or 3. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  int    channels;   /* 1 or 3 */
  int    width;
  int    height;
  float *data;       /* channels*height*width floats, owned */
} DdimImage;

/* Loads @path and converts it to @channels channels: 1 = luminance
 * (Rec. 709 weights on the stored, gamma-encoded values), 3 = RGB (a gray file
 * is replicated). Alpha is dropped (colour values are taken as stored). If @width and @height are > 0, the image is
 * resized to exactly that size (GdkPixbuf, GDK_INTERP_HYPER); otherwise it
 * keeps its own size. Errors: DDIM_ERROR_IO (unreadable), DDIM_ERROR_FORMAT
 * (not an image), DDIM_ERROR_INVALID (channels not 1 or 3). */
DdimImage *ddim_image_load (const char *path, int channels, int width, int height,
                            GError **error);
/* Wraps a copy of @chw. */
DdimImage *ddim_image_new_from_data (int channels, int width, int height, const float *chw);
void       ddim_image_free (DdimImage *image);

/* Writes an 8-bit RGB PNG (a 1-channel image has its value replicated in R,
 * G and B, which loads back exactly); values clamped to [-1,1]
 * and rounded. Written atomically (temporary file, then rename). */
gboolean ddim_image_save_png (const char *path, int channels, int width, int height,
                              const float *chw, GError **error);
/* Writes @n images of [C,H,W] (consecutive in @nchw) as a grid of @columns
 * columns with a 2-pixel white gap, as one PNG. */
gboolean ddim_image_save_grid_png (const char *path, int n, int channels, int width,
                                   int height, const float *nchw, int columns,
                                   GError **error);

/* PSNR in dB between two [-1,1] tensors of @n values, on the [0,1] scale
 * (peak 1). Returns INFINITY when they are equal. */
double ddim_psnr (const float *a, const float *b, gsize n);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimImage, ddim_image_free)

G_END_DECLS
