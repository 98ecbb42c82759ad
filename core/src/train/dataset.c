/* Training data: IDX files (Fashion-MNIST, through GIO's zlib decompressor)
 * and folders of images. See ddim/dataset.h for the contract. */
#include <gio/gio.h>
#include <string.h>

#include "ddim/dataset.h"
#include "ddim/error.h"
#include "ddim/image.h"

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
/* Largest image side accepted from an IDX header. */
#define IDX_MAX_SIDE 4096

void
ddim_dataset_free (DdimDataset *d)
{
  if (d == NULL)
    return;
  g_free (d->images);
  g_free (d->labels);
  g_free (d);
}

const float *
ddim_dataset_get_image (const DdimDataset *d, int index)
{
  g_return_val_if_fail (d != NULL, NULL);
  g_return_val_if_fail (index >= 0 && index < d->n, NULL);
  return d->images + (gsize) index * d->channels * d->size * d->size;
}

const char *
ddim_dataset_default_fashion_mnist_dir (void)
{
  return "/usr/share/datasets/fashion-mnist";
}

static gboolean
check_args (int size, int channels, int max_items, GError **error)
{
  if (size < 1 || size > 65536)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "image size must be between 1 and 65536 pixels, not %d", size);
      return FALSE;
    }
  if (channels != 1 && channels != 3)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "%d channels asked for, only 1 or 3 are supported", channels);
      return FALSE;
    }
  if (max_items < 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the maximum number of items must be >= 0 (0: all), not %d", max_items);
      return FALSE;
    }
  return TRUE;
}

/* ---- IDX ---- */

typedef struct {
  const char   *path;
  GInputStream *stream;
  gboolean      gzip;
} IdxReader;

static void
idx_reader_clear (IdxReader *r)
{
  g_clear_object (&r->stream);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (IdxReader, idx_reader_clear)

static gboolean
idx_open (IdxReader *r, const char *path, GError **error)
{
  r->path = path;
  r->gzip = g_str_has_suffix (path, ".gz") || g_str_has_suffix (path, ".GZ");
  g_autoptr (GFile) file = g_file_new_for_path (path);
  g_autoptr (GError) local = NULL;
  g_autoptr (GFileInputStream) in = g_file_read (file, NULL, &local);
  if (in == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read dataset file %s: %s", path,
                   local->message);
      return FALSE;
    }
  if (r->gzip)
    {
      g_autoptr (GZlibDecompressor) dec = g_zlib_decompressor_new (G_ZLIB_COMPRESSOR_FORMAT_GZIP);
      r->stream = g_converter_input_stream_new (G_INPUT_STREAM (in), G_CONVERTER (dec));
    }
  else
    r->stream = G_INPUT_STREAM (g_steal_pointer (&in));
  return TRUE;
}

/* Reads exactly @count bytes; a short read is a "truncated" error saying
 * what was being read. */
static gboolean
idx_read (IdxReader *r, void *buf, gsize count, const char *what, GError **error)
{
  gsize got = 0;
  g_autoptr (GError) local = NULL;
  if (!g_input_stream_read_all (r->stream, buf, count, &got, NULL, &local))
    {
      if (g_error_matches (local, G_IO_ERROR, G_IO_ERROR_INVALID_DATA)
          || g_error_matches (local, G_IO_ERROR, G_IO_ERROR_PARTIAL_INPUT))
        g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                     "%s is not valid gzip data (%s)", r->path, local->message);
      else
        g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read dataset file %s: %s",
                     r->path, local->message);
      return FALSE;
    }
  if (got < count)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "%s is truncated: it ends in the %s (%" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT
                   " bytes present)", r->path, what, got, count);
      return FALSE;
    }
  return TRUE;
}

static guint32
be32 (const guint8 *p)
{
  return ((guint32) p[0] << 24) | ((guint32) p[1] << 16) | ((guint32) p[2] << 8) | p[3];
}

/* Reads the magic and the @ndim dimensions of an IDX header. */
static gboolean
idx_header (IdxReader *r, guint32 magic, int ndim, guint32 *dims, GError **error)
{
  guint8 head[16];
  if (!idx_read (r, head, 4, "header", error))
    return FALSE;
  guint32 m = be32 (head);
  if (m != magic)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "%s is not an IDX %s file: magic number 0x%08x, expected 0x%08x", r->path,
                   magic == IDX_MAGIC_IMAGES ? "image" : "label", m, magic);
      return FALSE;
    }
  if (!idx_read (r, head + 4, 4 * (gsize) ndim, "header", error))
    return FALSE;
  for (int i = 0; i < ndim; i++)
    {
      dims[i] = be32 (head + 4 + 4 * i);
      if (dims[i] == 0)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "%s: IDX dimension %d is 0", r->path, i);
          return FALSE;
        }
    }
  return TRUE;
}

/* Area-averaging weights for resampling @src pixels to @dst < @src pixels:
 * w[o * src + i] is the part of output pixel o covered by input pixel i,
 * normalised so that each row sums to 1. */
static float *
area_weights (int src, int dst)
{
  float *w = g_new0 (float, (gsize) src * dst);
  double scale = (double) src / dst;
  for (int o = 0; o < dst; o++)
    {
      double lo = o * scale, hi = (o + 1) * scale;
      for (int i = (int) lo; i < src && i < hi; i++)
        {
          double a = MAX (lo, (double) i), b = MIN (hi, (double) i + 1);
          if (b > a)
            w[(gsize) o * src + i] = (float) ((b - a) / scale);
        }
    }
  return w;
}

/* One rows x cols byte image -> [channels, size, size] floats (see the
 * header for the geometry). @square and @tmp are scratch of side^2 floats
 * (side = max(rows, cols)). */
static void
convert_image (const guint8 *pix, int rows, int cols, int size, int channels,
               const float *weights, float *square, float *tmp, float *out)
{
  int side = MAX (rows, cols);
  gsize plane = (gsize) size * size;
  if (size >= side)
    {
      int oy = (size - rows) / 2, ox = (size - cols) / 2;
      for (gsize i = 0; i < plane; i++)
        out[i] = -1.f;
      for (int y = 0; y < rows; y++)
        for (int x = 0; x < cols; x++)
          out[(gsize) (y + oy) * size + x + ox] = pix[(gsize) y * cols + x] / 127.5f - 1.f;
    }
  else
    {
      /* Pad to a square, then separable area averaging. */
      int oy = (side - rows) / 2, ox = (side - cols) / 2;
      for (gsize i = 0; i < (gsize) side * side; i++)
        square[i] = -1.f;
      for (int y = 0; y < rows; y++)
        for (int x = 0; x < cols; x++)
          square[(gsize) (y + oy) * side + x + ox] = pix[(gsize) y * cols + x] / 127.5f - 1.f;
      /* tmp[y][ox] = sum_x square[y][x] w[ox][x] */
      for (int y = 0; y < side; y++)
        for (int o = 0; o < size; o++)
          {
            const float *w = weights + (gsize) o * side;
            float acc = 0.f;
            for (int x = 0; x < side; x++)
              acc += w[x] * square[(gsize) y * side + x];
            tmp[(gsize) y * size + o] = acc;
          }
      for (int o = 0; o < size; o++)
        for (int x = 0; x < size; x++)
          {
            const float *w = weights + (gsize) o * side;
            float acc = 0.f;
            for (int y = 0; y < side; y++)
              acc += w[y] * tmp[(gsize) y * size + x];
            /* Weights sum to 1 up to rounding: keep [-1, 1] exact. */
            out[(gsize) o * size + x] = CLAMP (acc, -1.f, 1.f);
          }
    }
  for (int c = 1; c < channels; c++)
    memcpy (out + c * plane, out, plane * sizeof (float));
}

DdimDataset *
ddim_dataset_load_idx (const char *images_path, const char *labels_path, int size,
                       int channels, int max_items, GError **error)
{
  g_return_val_if_fail (images_path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  if (!check_args (size, channels, max_items, error))
    return NULL;

  g_auto (IdxReader) img = { 0 };
  g_auto (IdxReader) lab = { 0 };
  guint32 idims[3], ldims[1];
  if (!idx_open (&img, images_path, error) || !idx_header (&img, IDX_MAGIC_IMAGES, 3, idims, error))
    return NULL;
  if (idims[1] > IDX_MAX_SIDE || idims[2] > IDX_MAX_SIDE || idims[0] > G_MAXINT)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "%s: implausible IDX dimensions %u x %u x %u", images_path, idims[0],
                   idims[1], idims[2]);
      return NULL;
    }
  if (labels_path)
    {
      if (!idx_open (&lab, labels_path, error)
          || !idx_header (&lab, IDX_MAGIC_LABELS, 1, ldims, error))
        return NULL;
      if (ldims[0] != idims[0])
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                       "%s has %u images but %s has %u labels", images_path, idims[0],
                       labels_path, ldims[0]);
          return NULL;
        }
    }

  int rows = (int) idims[1], cols = (int) idims[2];
  int n = (int) idims[0];
  if (max_items > 0 && max_items < n)
    n = max_items;
  gsize plane = (gsize) size * size;
  gsize pix_count = (gsize) rows * cols;
  if ((guint64) n * channels * plane > G_MAXSIZE / sizeof (float) / 2)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "%d images of %dx%d do not fit in memory", n, size, size);
      return NULL;
    }
  g_autoptr (DdimDataset) d = g_new0 (DdimDataset, 1);
  d->n = n;
  d->channels = channels;
  d->size = size;
  d->images = g_try_new (float, (gsize) n * channels * plane);
  if (d->images == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "out of memory for %d images of %dx%d", n, size, size);
      return NULL;
    }

  int side = MAX (rows, cols);
  g_autofree float *weights = size < side ? area_weights (side, size) : NULL;
  g_autofree float *square = g_new (float, (gsize) side * side);
  g_autofree float *tmp = g_new (float, (gsize) side * MAX (size, 1));
  /* Read in chunks of images to bound the byte buffer. */
  int chunk = (int) MAX (1, MIN ((gsize) n, (gsize) (4 << 20) / pix_count));
  g_autofree guint8 *buf = g_new (guint8, (gsize) chunk * pix_count);
  for (int i0 = 0; i0 < n; i0 += chunk)
    {
      int m = MIN (chunk, n - i0);
      if (!idx_read (&img, buf, (gsize) m * pix_count, "image data", error))
        return NULL;
      for (int j = 0; j < m; j++)
        convert_image (buf + (gsize) j * pix_count, rows, cols, size, channels, weights, square,
                       tmp, d->images + (gsize) (i0 + j) * channels * plane);
    }
  if (labels_path)
    {
      d->labels = g_new (guint8, n);
      if (!idx_read (&lab, d->labels, (gsize) n, "label data", error))
        return NULL;
    }
  return g_steal_pointer (&d);
}


/* ---- folders ---- */

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

DdimDataset *
ddim_dataset_load_folder (const char *dir, int size, int channels, int max_items,
                          GError **error)
{
  g_return_val_if_fail (dir != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  if (!check_args (size, channels, max_items, error))
    return NULL;
  g_autoptr (GError) local = NULL;
  g_autoptr (GDir) gdir = g_dir_open (dir, 0, &local);
  if (gdir == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read image folder %s: %s", dir,
                   local->message);
      return NULL;
    }
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  while ((name = g_dir_read_name (gdir)))
    {
      if (name[0] == '.')
        continue;
      g_autofree char *path = g_build_filename (dir, name, NULL);
      if (g_file_test (path, G_FILE_TEST_IS_DIR))
        continue;
      g_ptr_array_add (names, g_strdup (name));
    }
  if (names->len == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "image folder %s has no images", dir);
      return NULL;
    }
  g_ptr_array_sort (names, compare_names);
  int n = (int) MIN (names->len, (guint) G_MAXINT);
  if (max_items > 0 && max_items < n)
    n = max_items;

  gsize per = (gsize) channels * size * size;
  g_autoptr (DdimDataset) d = g_new0 (DdimDataset, 1);
  d->n = n;
  d->channels = channels;
  d->size = size;
  d->images = g_try_new (float, (gsize) n * per);
  if (d->images == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "out of memory for %d images of %dx%d", n, size, size);
      return NULL;
    }
  for (int i = 0; i < n; i++)
    {
      g_autofree char *path = g_build_filename (dir, g_ptr_array_index (names, i), NULL);
      g_autoptr (DdimImage) im = ddim_image_load (path, channels, size, size, error);
      if (im == NULL)
        return NULL;
      memcpy (d->images + (gsize) i * per, im->data, per * sizeof (float));
    }
  return g_steal_pointer (&d);
}

DdimDataset *
ddim_dataset_load_fashion_mnist (const char *dir, const char *split, int size, int channels,
                                 int max_items, GError **error)
{
  g_return_val_if_fail (split != NULL, NULL);
  const char *prefix;
  if (g_str_equal (split, "train"))
    prefix = "train";
  else if (g_str_equal (split, "test"))
    prefix = "t10k";
  else
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "unknown Fashion-MNIST split '%s' (expected 'train' or 'test')", split);
      return NULL;
    }
  if (dir == NULL)
    dir = ddim_dataset_default_fashion_mnist_dir ();
  g_autofree char *images_name = g_strconcat (prefix, "-images-idx3-ubyte.gz", NULL);
  g_autofree char *labels_name = g_strconcat (prefix, "-labels-idx1-ubyte.gz", NULL);
  g_autofree char *images = g_build_filename (dir, images_name, NULL);
  g_autofree char *labels = g_build_filename (dir, labels_name, NULL);
  return ddim_dataset_load_idx (images, labels, size, channels, max_items, error);
}
