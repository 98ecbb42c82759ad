/* Training images: Fashion-MNIST IDX files (gzip-compressed or plain) or a
 * folder of image files, as float tensors ready for the model. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* @n images of [channels, size, size] floats in [-1, 1] (pixel value v in
 * 0..255 maps to v/127.5 - 1, as ddim_image_load), consecutive in @images,
 * and, for IDX data loaded with a labels file, one label per image. */
typedef struct {
  int     n;
  int     channels;   /* 1 or 3 (a gray source is replicated) */
  int     size;       /* height = width */
  float  *images;     /* n * channels * size * size floats, owned */
  guint8 *labels;     /* n labels, owned; NULL when there are none */
} DdimDataset;

/* Loads an IDX image file (magic 0x00000803, [count, rows, cols] unsigned
 * bytes) and optionally its IDX label file (magic 0x00000801, [count]).
 * A name ending in ".gz" is read through GIO's zlib decompressor (gzip
 * format); any other name is read as a plain IDX file. Only the first
 * @max_items items are read (0: all of them).
 *
 * Geometry: when @size >= the source size (28 for Fashion-MNIST) the image
 * is centred on a @size x @size canvas (extra column/row right and bottom
 * when the margin is odd) filled with -1 (black, the Fashion-MNIST
 * background). When @size is smaller, the image is downscaled by area
 * averaging (each output pixel is the mean of the source area it covers,
 * partial pixels weighted by their overlap): exact, deterministic and free
 * of aliasing for the 28 -> 16 style reductions this is for. A non-square
 * source is first padded to a square.
 *
 * Errors name the file: DDIM_ERROR_IO (missing, unreadable),
 * DDIM_ERROR_FORMAT (not gzip data or corrupt compressed data, a wrong IDX
 * magic, zero dimensions, data shorter than the header declares — for the
 * items read), DDIM_ERROR_MISMATCH (image and label counts differ),
 * DDIM_ERROR_INVALID (size < 1, channels not 1 or 3, max_items < 0). */
DdimDataset *ddim_dataset_load_idx (const char *images_path, const char *labels_path, int size,
                                    int channels, int max_items, GError **error);

/* Loads every image file of @dir in sorted (strcmp) file-name order with
 * ddim_image_load, resized to @size x @size (GdkPixbuf, GDK_INTERP_HYPER)
 * and converted to @channels. Hidden files (names starting with '.') and
 * sub-folders are ignored; any other file that is not an image is an error
 * naming it. No labels. An empty folder is DDIM_ERROR_INVALID. */
DdimDataset *ddim_dataset_load_folder (const char *dir, int size, int channels, int max_items,
                                       GError **error);

/* "/usr/share/datasets/fashion-mnist", where Debian's dataset-fashion-mnist
 * package installs the IDX files. */
const char  *ddim_dataset_default_fashion_mnist_dir (void);

/* Fashion-MNIST split "train" (train-images-idx3-ubyte.gz and
 * train-labels-idx1-ubyte.gz, 60000 items) or "test" (t10k-*, 10000) from
 * @dir (NULL: the default folder), with labels. Another split name is
 * DDIM_ERROR_INVALID. */
DdimDataset *ddim_dataset_load_fashion_mnist (const char *dir, const char *split, int size,
                                              int channels, int max_items, GError **error);

/* The indices, in dataset order, of the first @count items whose label
 * is @label (@other FALSE) or is not @label (@other TRUE): a deterministic
 * pick (g_free). DDIM_ERROR_INVALID when the dataset has no labels, when
 * @count < 1, or when fewer than @count items qualify (the message says
 * how many do). */
int         *ddim_dataset_find_labels (const DdimDataset *dataset, int label, gboolean other,
                                       int count, GError **error);

/* Copies of the @n items @indices (each in 0..n-1), stacked
 * [n, channels, size, size] (g_free). */
float       *ddim_dataset_gather (const DdimDataset *dataset, const int *indices, int n);

void         ddim_dataset_free (DdimDataset *dataset);

/* Image @index (channels * size * size floats, borrowed). */
const float *ddim_dataset_get_image (const DdimDataset *dataset, int index);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimDataset, ddim_dataset_free)

G_END_DECLS
