/* Image files <-> [C,H,W] float tensors in [-1,1], through GdkPixbuf.
 *
 * Choices made here (see ddim/image.h for the contract):
 *  - Loading: the embedded orientation (EXIF) is applied, alpha is dropped
 *    before any resizing (colour values are taken as stored, not weighted by
 *    alpha), then the image is resized with GDK_INTERP_HYPER when a size is
 *    asked for. Luminance uses Rec. 709 weights on the stored 8-bit values,
 *    computed in float; a pixel with r == g == b gives exactly r.
 *  - Saving: GdkPixbuf can only write RGB(A), so a 1-channel image is written
 *    as an 8-bit RGB PNG with the value replicated in R, G and B. Loading it
 *    back with 1 channel gives exactly the saved values (see above). The
 *    DESIGN rules out a hand-written codec, and libpng is not a libddim
 *    dependency.
 *  - Values are clamped to [-1,1] (NaN counts as -1) and mapped to
 *    round((x+1)*127.5).
 *  - Files are rendered to memory first, then written with g_file_set_contents
 *    (temporary file + rename), so a failure never leaves a half-written file.
 *  - Grids: cells are laid out row by row, with 2-pixel white gaps between
 *    cells and no outer border; the number of columns is clamped to n, and
 *    rows = ceil(n / columns). */
#include "ddim/image.h"
#include "ddim/error.h"

#include <math.h>
#include <string.h>
#include <gdk-pixbuf/gdk-pixbuf.h>

#define GRID_GAP 2

static gboolean
size_ok (int channels, int width, int height)
{
  return width > 0 && height > 0 &&
         (guint64) channels * (guint64) width * (guint64) height <= G_MAXINT32;
}

static inline float
byte_to_value (float v)
{
  return v / 127.5f - 1.0f;
}

static inline guint8
value_to_byte (float x)
{
  if (!(x >= -1.0f))          /* also catches NaN */
    x = -1.0f;
  else if (x > 1.0f)
    x = 1.0f;
  return (guint8) floor (((double) x + 1.0) * 127.5 + 0.5);
}

static inline float
luminance (guint8 r, guint8 g, guint8 b)
{
  if (r == g && g == b)
    return (float) r;
  return 0.2126f * (float) r + 0.7152f * (float) g + 0.0722f * (float) b;
}

/* Maps a GdkPixbuf/GFile loading error to DDIM_ERROR. */
static void
set_load_error (GError **error, const char *path, const GError *cause)
{
  int code = DDIM_ERROR_FORMAT;

  if (cause->domain == G_FILE_ERROR)
    code = DDIM_ERROR_IO;
  else if (cause->domain == GDK_PIXBUF_ERROR &&
           cause->code == GDK_PIXBUF_ERROR_INSUFFICIENT_MEMORY)
    code = DDIM_ERROR_IO;

  g_set_error (error, DDIM_ERROR, code, "Cannot load image '%s': %s",
               path, cause->message);
}

/* A new RGB pixbuf (no alpha) with the colour values of @src as stored. */
static GdkPixbuf *
drop_alpha (GdkPixbuf *src)
{
  int w = gdk_pixbuf_get_width (src);
  int h = gdk_pixbuf_get_height (src);
  int sn = gdk_pixbuf_get_n_channels (src);
  int sstride = gdk_pixbuf_get_rowstride (src);
  const guint8 *spix = gdk_pixbuf_read_pixels (src);
  GdkPixbuf *dst = gdk_pixbuf_new (GDK_COLORSPACE_RGB, FALSE, 8, w, h);

  if (dst == NULL)
    return NULL;

  int dstride = gdk_pixbuf_get_rowstride (dst);
  guint8 *dpix = gdk_pixbuf_get_pixels (dst);

  for (int y = 0; y < h; y++)
    {
      const guint8 *s = spix + (gsize) y * sstride;
      guint8 *d = dpix + (gsize) y * dstride;
      for (int x = 0; x < w; x++)
        {
          d[3 * x + 0] = s[sn * x + 0];
          d[3 * x + 1] = s[sn * x + 1];
          d[3 * x + 2] = s[sn * x + 2];
        }
    }
  return dst;
}

DdimImage *
ddim_image_load (const char *path, int channels, int width, int height,
                 GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (channels != 1 && channels != 3)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "Cannot load image '%s': %d channels asked for, only 1 or 3 are supported",
                   path, channels);
      return NULL;
    }

  g_autoptr(GError) local_error = NULL;
  g_autoptr(GdkPixbuf) loaded = gdk_pixbuf_new_from_file (path, &local_error);
  if (loaded == NULL)
    {
      set_load_error (error, path, local_error);
      return NULL;
    }

  if (gdk_pixbuf_get_colorspace (loaded) != GDK_COLORSPACE_RGB ||
      gdk_pixbuf_get_bits_per_sample (loaded) != 8 ||
      gdk_pixbuf_get_n_channels (loaded) < 3)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "Cannot load image '%s': unsupported pixel layout", path);
      return NULL;
    }

  g_autoptr(GdkPixbuf) pixbuf = gdk_pixbuf_apply_embedded_orientation (loaded);
  if (pixbuf == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "Cannot load image '%s': out of memory", path);
      return NULL;
    }

  if (gdk_pixbuf_get_has_alpha (pixbuf))
    {
      GdkPixbuf *rgb = drop_alpha (pixbuf);
      if (rgb == NULL)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                       "Cannot load image '%s': out of memory", path);
          return NULL;
        }
      g_object_unref (pixbuf);
      pixbuf = rgb;
    }

  if (width > 0 && height > 0 &&
      (width != gdk_pixbuf_get_width (pixbuf) || height != gdk_pixbuf_get_height (pixbuf)))
    {
      GdkPixbuf *scaled = NULL;
      if (size_ok (3, width, height))
        scaled = gdk_pixbuf_scale_simple (pixbuf, width, height, GDK_INTERP_HYPER);
      if (scaled == NULL)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                       "Cannot resize image '%s' to %d×%d pixels", path, width, height);
          return NULL;
        }
      g_object_unref (pixbuf);
      pixbuf = scaled;
    }

  int w = gdk_pixbuf_get_width (pixbuf);
  int h = gdk_pixbuf_get_height (pixbuf);
  int n = gdk_pixbuf_get_n_channels (pixbuf);
  int stride = gdk_pixbuf_get_rowstride (pixbuf);
  const guint8 *pixels = gdk_pixbuf_read_pixels (pixbuf);
  gsize plane = (gsize) w * (gsize) h;

  if (!size_ok (channels, w, h))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "Cannot load image '%s': %d×%d pixels is too large", path, w, h);
      return NULL;
    }

  float *data = g_try_new (float, plane * (gsize) channels);
  if (data == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "Cannot load image '%s': out of memory for %d×%d pixels", path, w, h);
      return NULL;
    }

  for (int y = 0; y < h; y++)
    {
      const guint8 *row = pixels + (gsize) y * stride;
      for (int x = 0; x < w; x++)
        {
          const guint8 *p = row + (gsize) x * n;
          gsize i = (gsize) y * w + x;
          if (channels == 1)
            data[i] = byte_to_value (luminance (p[0], p[1], p[2]));
          else
            {
              data[i] = byte_to_value (p[0]);
              data[plane + i] = byte_to_value (p[1]);
              data[2 * plane + i] = byte_to_value (p[2]);
            }
        }
    }

  DdimImage *image = g_new0 (DdimImage, 1);
  image->channels = channels;
  image->width = w;
  image->height = h;
  image->data = data;
  return image;
}

DdimImage *
ddim_image_new_from_data (int channels, int width, int height, const float *chw)
{
  g_return_val_if_fail (channels == 1 || channels == 3, NULL);
  g_return_val_if_fail (size_ok (channels, width, height), NULL);
  g_return_val_if_fail (chw != NULL, NULL);

  DdimImage *image = g_new0 (DdimImage, 1);
  image->channels = channels;
  image->width = width;
  image->height = height;
  image->data = g_memdup2 (chw, sizeof (float) * (gsize) channels * width * height);
  return image;
}

void
ddim_image_free (DdimImage *image)
{
  if (image == NULL)
    return;
  g_free (image->data);
  g_free (image);
}

/* Checks the shape arguments of the save functions; a bad one is a user
 * error (sizes often come from the command line). */
static gboolean
check_shape (const char *path, int channels, int width, int height, GError **error)
{
  if (channels != 1 && channels != 3)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "Cannot write image '%s': %d channels, only 1 or 3 are supported",
                   path, channels);
      return FALSE;
    }
  if (!size_ok (channels, width, height))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "Cannot write image '%s': invalid size %d×%d", path, width, height);
      return FALSE;
    }
  return TRUE;
}

gboolean
ddim_image_save_png (const char *path, int channels, int width, int height,
                     const float *chw, GError **error)
{
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (chw != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (!check_shape (path, channels, width, height, error))
    return FALSE;

  g_autoptr(GdkPixbuf) pixbuf = gdk_pixbuf_new (GDK_COLORSPACE_RGB, FALSE, 8, width, height);
  if (pixbuf == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "Cannot write image '%s': out of memory for %d×%d pixels",
                   path, width, height);
      return FALSE;
    }

  int stride = gdk_pixbuf_get_rowstride (pixbuf);
  guint8 *pixels = gdk_pixbuf_get_pixels (pixbuf);
  gsize plane = (gsize) width * (gsize) height;

  for (int y = 0; y < height; y++)
    {
      guint8 *row = pixels + (gsize) y * stride;
      for (int x = 0; x < width; x++)
        {
          gsize i = (gsize) y * width + x;
          guint8 *p = row + 3 * (gsize) x;
          if (channels == 1)
            p[0] = p[1] = p[2] = value_to_byte (chw[i]);
          else
            {
              p[0] = value_to_byte (chw[i]);
              p[1] = value_to_byte (chw[plane + i]);
              p[2] = value_to_byte (chw[2 * plane + i]);
            }
        }
    }

  g_autoptr(GError) local_error = NULL;
  g_autofree char *buffer = NULL;
  gsize length = 0;
  if (!gdk_pixbuf_save_to_buffer (pixbuf, &buffer, &length, "png", &local_error, NULL))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "Cannot encode image '%s': %s",
                   path, local_error->message);
      return FALSE;
    }

  if (!g_file_set_contents (path, buffer, (gssize) length, &local_error))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "Cannot write image '%s': %s",
                   path, local_error->message);
      return FALSE;
    }
  return TRUE;
}

gboolean
ddim_image_save_grid_png (const char *path, int n, int channels, int width,
                          int height, const float *nchw, int columns,
                          GError **error)
{
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (nchw != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (n <= 0 || columns <= 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "Cannot write image grid '%s': %d images in %d columns",
                   path, n, columns);
      return FALSE;
    }
  if (!check_shape (path, channels, width, height, error))
    return FALSE;

  int cols = MIN (columns, n);
  int rows = (n + cols - 1) / cols;
  guint64 gw = (guint64) cols * (guint64) width + (guint64) (cols - 1) * GRID_GAP;
  guint64 gh = (guint64) rows * (guint64) height + (guint64) (rows - 1) * GRID_GAP;

  if (gw > G_MAXINT32 || gh > G_MAXINT32 || !size_ok (channels, (int) gw, (int) gh))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "Cannot write image grid '%s': %d images of %d×%d pixels is too large",
                   path, n, width, height);
      return FALSE;
    }

  int grid_w = (int) gw, grid_h = (int) gh;
  gsize grid_plane = (gsize) grid_w * (gsize) grid_h;
  gsize cell_plane = (gsize) width * (gsize) height;
  g_autofree float *grid = g_try_new (float, grid_plane * (gsize) channels);
  if (grid == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "Cannot write image grid '%s': out of memory for %d×%d pixels",
                   path, grid_w, grid_h);
      return FALSE;
    }

  for (gsize i = 0; i < grid_plane * (gsize) channels; i++)
    grid[i] = 1.0f;   /* white gaps */

  for (int k = 0; k < n; k++)
    {
      int x0 = (k % cols) * (width + GRID_GAP);
      int y0 = (k / cols) * (height + GRID_GAP);
      const float *cell = nchw + (gsize) k * channels * cell_plane;
      for (int c = 0; c < channels; c++)
        for (int y = 0; y < height; y++)
          memcpy (grid + c * grid_plane + (gsize) (y0 + y) * grid_w + x0,
                  cell + c * cell_plane + (gsize) y * width,
                  sizeof (float) * (gsize) width);
    }

  return ddim_image_save_png (path, channels, grid_w, grid_h, grid, error);
}

double
ddim_psnr (const float *a, const float *b, gsize n)
{
  g_return_val_if_fail (n == 0 || (a != NULL && b != NULL), NAN);

  if (n == 0)
    return INFINITY;   /* nothing differs */

  double sum = 0.0;
  for (gsize i = 0; i < n; i++)
    {
      double d = ((double) a[i] - (double) b[i]) / 2.0;
      sum += d * d;
    }
  double mse = sum / (double) n;
  if (mse == 0.0)
    return INFINITY;
  return 10.0 * log10 (1.0 / mse);
}
