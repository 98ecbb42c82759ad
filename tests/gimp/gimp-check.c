/* ddim-gimp-check: the GIMP batch tests' helper outside GIMP.
 *
 *   ddim-gimp-check pattern OUT.png W H [--alpha]
 *       a smooth colour pattern (with an alpha gradient from 25% to 100%)
 *   ddim-gimp-check mnist OUT.png INDEX [DIR]
 *       Fashion-MNIST test image INDEX (28x28, gray as RGB) from DIR
 *       (default /usr/share/datasets/fashion-mnist)
 *   ddim-gimp-check compare A.png B.png [--channels rgb|alpha] [--max-diff N]
 *                                       [--min-diff N] [--min-psnr DB]
 *                                       [--inside M.png | --outside M.png]
 *       same size, then the largest difference (0..255) and PSNR (peak 255)
 *       of the channels; exit 1 when a bound is not met (--min-diff: the
 *       largest difference must be at least N). --inside / --outside
 *       compare only the pixels where the mask M (its first channel, same
 *       size) is 255 / 0.
 *   ddim-gimp-check classify IMAGE.png CLASSIFIER_DIR [--expect CLASS]
 *                                                   [--toward CLASS BASE.png]
 *       the Fashion-MNIST class the classifier (ddim/classifier.h) gives
 *       the image (its luminance, resized to the classifier's size):
 *       prints "class SLUG (p = P)"; exit 1 when it is not CLASS (a slug,
 *       as "sneaker"), or, with --toward, unless the probability of CLASS
 *       is at least 0.1 higher for IMAGE than for BASE.
 *
 * Exit status 2 for usage and file errors. */
#include <gdk-pixbuf/gdk-pixbuf.h>
#include <gio/gio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ddim/classifier.h"
#include "ddim/image.h"

static int
fail (const char *format, ...) G_GNUC_PRINTF (1, 2);

static int
fail (const char *format, ...)
{
  va_list args;
  va_start (args, format);
  g_autofree char *message = g_strdup_vprintf (format, args);
  va_end (args);
  g_printerr ("ddim-gimp-check: %s\n", message);
  return 2;
}

static int
cmd_pattern (int argc, char **argv)
{
  if (argc < 5)
    return fail ("usage: pattern OUT.png W H [--alpha]");
  int w = atoi (argv[3]), h = atoi (argv[4]);
  gboolean alpha = argc > 5 && strcmp (argv[5], "--alpha") == 0;
  if (w < 1 || h < 1)
    return fail ("bad size");
  g_autoptr (GdkPixbuf) pb = gdk_pixbuf_new (GDK_COLORSPACE_RGB, alpha, 8, w, h);
  int stride = gdk_pixbuf_get_rowstride (pb), n = alpha ? 4 : 3;
  guchar *px = gdk_pixbuf_get_pixels (pb);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      {
        double u = (double) x / MAX (w - 1, 1), v = (double) y / MAX (h - 1, 1);
        guchar *p = px + y * stride + x * n;
        p[0] = (guchar) lround (255 * (0.15 + 0.7 * u));
        p[1] = (guchar) lround (255 * (0.2 + 0.6 * v));
        p[2] = (guchar) lround (255 * (0.5 + 0.4 * sin (6.0 * u + 4.0 * v)));
        if (alpha)
          p[3] = (guchar) lround (255 * (0.25 + 0.75 * u));
      }
  g_autoptr (GError) error = NULL;
  if (!gdk_pixbuf_save (pb, argv[2], "png", &error, NULL))
    return fail ("%s", error->message);
  return 0;
}

static int
cmd_mnist (int argc, char **argv)
{
  if (argc < 4)
    return fail ("usage: mnist OUT.png INDEX [DIR]");
  int index = atoi (argv[3]);
  const char *dir = argc > 4 ? argv[4] : "/usr/share/datasets/fashion-mnist";
  g_autofree char *path = g_build_filename (dir, "t10k-images-idx3-ubyte.gz", NULL);
  g_autoptr (GFile) file = g_file_new_for_path (path);
  g_autoptr (GError) error = NULL;
  g_autoptr (GInputStream) raw = G_INPUT_STREAM (g_file_read (file, NULL, &error));
  if (raw == NULL)
    return fail ("%s (install dataset-fashion-mnist)", error->message);
  g_autoptr (GZlibDecompressor) dec = g_zlib_decompressor_new (G_ZLIB_COMPRESSOR_FORMAT_GZIP);
  g_autoptr (GInputStream) in = g_converter_input_stream_new (raw, G_CONVERTER (dec));
  guchar header[16];
  gsize got = 0;
  if (!g_input_stream_read_all (in, header, sizeof header, &got, NULL, &error) || got != 16)
    return fail ("%s: cannot read the IDX header", path);
  guint32 magic = GUINT32_FROM_BE (*(guint32 *) header);
  guint32 count = GUINT32_FROM_BE (*(guint32 *) (header + 4));
  guint32 rows = GUINT32_FROM_BE (*(guint32 *) (header + 8));
  guint32 cols = GUINT32_FROM_BE (*(guint32 *) (header + 12));
  if (magic != 0x803 || index < 0 || (guint32) index >= count || rows > 1024 || cols > 1024)
    return fail ("%s: not an IDX image file, or index out of range", path);
  gsize item = (gsize) rows * cols;
  g_autofree guchar *data = g_malloc (item);
  for (int i = 0; i <= index; i++)
    if (!g_input_stream_read_all (in, data, item, &got, NULL, &error) || got != item)
      return fail ("%s: truncated", path);
  g_autoptr (GdkPixbuf) pb = gdk_pixbuf_new (GDK_COLORSPACE_RGB, FALSE, 8, (int) cols,
                                             (int) rows);
  int stride = gdk_pixbuf_get_rowstride (pb);
  guchar *px = gdk_pixbuf_get_pixels (pb);
  for (guint32 y = 0; y < rows; y++)
    for (guint32 x = 0; x < cols; x++)
      memset (px + y * stride + x * 3, data[y * cols + x], 3);
  if (!gdk_pixbuf_save (pb, argv[2], "png", &error, NULL))
    return fail ("%s", error->message);
  return 0;
}

static int
cmd_compare (int argc, char **argv)
{
  if (argc < 4)
    return fail ("usage: compare A.png B.png [--channels rgb|alpha] [--max-diff N] "
                 "[--min-diff N] [--min-psnr DB] [--inside M.png | --outside M.png]");
  const char *channels = "rgb", *mask_file = NULL;
  int max_diff = -1, min_diff = -1, mask_value = 0;
  double min_psnr = -1;
  for (int i = 4; i + 1 < argc; i += 2)
    {
      if (strcmp (argv[i], "--channels") == 0)
        channels = argv[i + 1];
      else if (strcmp (argv[i], "--max-diff") == 0)
        max_diff = atoi (argv[i + 1]);
      else if (strcmp (argv[i], "--min-diff") == 0)
        min_diff = atoi (argv[i + 1]);
      else if (strcmp (argv[i], "--min-psnr") == 0)
        min_psnr = g_ascii_strtod (argv[i + 1], NULL);
      else if (strcmp (argv[i], "--inside") == 0 || strcmp (argv[i], "--outside") == 0)
        {
          mask_file = argv[i + 1];
          mask_value = strcmp (argv[i], "--inside") == 0 ? 255 : 0;
        }
      else
        return fail ("unknown option %s", argv[i]);
    }
  gboolean alpha_only = strcmp (channels, "alpha") == 0;
  if (!alpha_only && strcmp (channels, "rgb") != 0)
    return fail ("--channels is rgb or alpha");
  g_autoptr (GError) error = NULL;
  g_autoptr (GdkPixbuf) a = gdk_pixbuf_new_from_file (argv[2], &error);
  if (a == NULL)
    return fail ("%s", error->message);
  g_autoptr (GdkPixbuf) b = gdk_pixbuf_new_from_file (argv[3], &error);
  if (b == NULL)
    return fail ("%s", error->message);
  int w = gdk_pixbuf_get_width (a), h = gdk_pixbuf_get_height (a);
  if (w != gdk_pixbuf_get_width (b) || h != gdk_pixbuf_get_height (b))
    {
      g_print ("%s is %dx%d, %s is %dx%d\n", argv[2], w, h, argv[3],
               gdk_pixbuf_get_width (b), gdk_pixbuf_get_height (b));
      return 1;
    }
  g_autoptr (GdkPixbuf) m = NULL;
  if (mask_file != NULL)
    {
      m = gdk_pixbuf_new_from_file (mask_file, &error);
      if (m == NULL)
        return fail ("%s", error->message);
      if (gdk_pixbuf_get_width (m) != w || gdk_pixbuf_get_height (m) != h)
        return fail ("%s is not %dx%d", mask_file, w, h);
    }
  int na = gdk_pixbuf_get_n_channels (a), nb = gdk_pixbuf_get_n_channels (b);
  int sa = gdk_pixbuf_get_rowstride (a), sb = gdk_pixbuf_get_rowstride (b);
  const guchar *pa = gdk_pixbuf_read_pixels (a), *pb = gdk_pixbuf_read_pixels (b);
  int worst = 0;
  double sse = 0;
  gsize count = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      {
        const guchar *p = pa + y * sa + x * na, *q = pb + y * sb + x * nb;
        if (m != NULL && gdk_pixbuf_read_pixels (m)[y * gdk_pixbuf_get_rowstride (m)
                                                    + x * gdk_pixbuf_get_n_channels (m)]
                             != mask_value)
          continue;
        for (int c = alpha_only ? 3 : 0; c < (alpha_only ? 4 : 3); c++)
          {
            int u = c < na ? p[c] : 255, v = c < nb ? q[c] : 255;
            int d = abs (u - v);
            worst = MAX (worst, d);
            sse += (double) d * d;
            count++;
          }
      }
  double psnr = sse == 0 ? INFINITY : 10 * log10 (255.0 * 255.0 / (sse / count));
  g_print ("%s vs %s (%s, %dx%d%s%s, %zu values): max diff %d, PSNR %.2f dB\n", argv[2],
           argv[3], channels, w, h, mask_file ? (mask_value ? ", inside " : ", outside ") : "",
           mask_file ? mask_file : "", count, worst, psnr);
  if (count == 0)
    {
      g_print ("FAIL: no pixels compared\n");
      return 1;
    }
  if (max_diff >= 0 && worst > max_diff)
    {
      g_print ("FAIL: max diff %d > %d\n", worst, max_diff);
      return 1;
    }
  if (min_diff >= 0 && worst < min_diff)
    {
      g_print ("FAIL: max diff %d < %d (no change)\n", worst, min_diff);
      return 1;
    }
  if (min_psnr >= 0 && psnr < min_psnr)
    {
      g_print ("FAIL: PSNR %.2f dB < %.2f dB\n", psnr, min_psnr);
      return 1;
    }
  return 0;
}

/* The class probabilities of an image file. */
static gboolean
classify_file (DdimClassifier *classifier, const char *path, float *probs, int *label,
               GError **error)
{
  int size = ddim_classifier_get_size (classifier);
  int channels = ddim_classifier_get_channels (classifier);
  g_autoptr (DdimImage) image = ddim_image_load (path, channels, size, size, error);
  return image != NULL && ddim_classifier_predict (classifier, image->data, 1, label, probs,
                                                   error);
}

static int
cmd_classify (int argc, char **argv)
{
  const char *usage = "usage: classify IMAGE.png CLASSIFIER_DIR [--expect CLASS] "
                      "[--toward CLASS BASE.png]";
  if (argc < 4)
    return fail ("%s", usage);
  g_autoptr (GError) error = NULL;
  int expected = -1, toward = -1;
  const char *base = NULL;
  for (int i = 4; i < argc; i++)
    {
      if (strcmp (argv[i], "--expect") == 0 && i + 1 < argc)
        {
          if (!ddim_fashion_mnist_class_from_name (argv[++i], &expected, &error))
            return fail ("%s", error->message);
        }
      else if (strcmp (argv[i], "--toward") == 0 && i + 2 < argc)
        {
          if (!ddim_fashion_mnist_class_from_name (argv[++i], &toward, &error))
            return fail ("%s", error->message);
          base = argv[++i];
        }
      else
        return fail ("%s", usage);
    }
  g_autoptr (DdimClassifier) classifier = ddim_classifier_load (argv[3], &error);
  if (classifier == NULL)
    return fail ("%s", error->message);
  float probs[DDIM_FASHION_MNIST_N_CLASSES];
  int label = -1;
  if (!classify_file (classifier, argv[2], probs, &label, &error))
    return fail ("%s", error->message);
  g_print ("%s: class %s (p = %.3f)\n", argv[2], ddim_fashion_mnist_class_slug (label),
           probs[label]);
  if (expected >= 0 && label != expected)
    {
      g_print ("FAIL: expected %s (p = %.3f)\n", ddim_fashion_mnist_class_slug (expected),
               probs[expected]);
      return 1;
    }
  if (toward >= 0)
    {
      float base_probs[DDIM_FASHION_MNIST_N_CLASSES];
      int base_label = -1;
      if (!classify_file (classifier, base, base_probs, &base_label, &error))
        return fail ("%s", error->message);
      g_print ("p(%s): %.3f here, %.3f in %s\n", ddim_fashion_mnist_class_slug (toward),
               probs[toward], base_probs[toward], base);
      if (probs[toward] < base_probs[toward] + 0.1f)
        {
          g_print ("FAIL: not toward %s\n", ddim_fashion_mnist_class_slug (toward));
          return 1;
        }
    }
  return 0;
}

int
main (int argc, char **argv)
{
  if (argc >= 2 && strcmp (argv[1], "pattern") == 0)
    return cmd_pattern (argc, argv);
  if (argc >= 2 && strcmp (argv[1], "mnist") == 0)
    return cmd_mnist (argc, argv);
  if (argc >= 2 && strcmp (argv[1], "compare") == 0)
    return cmd_compare (argc, argv);
  if (argc >= 2 && strcmp (argv[1], "classify") == 0)
    return cmd_classify (argc, argv);
  return fail ("usage: ddim-gimp-check pattern|mnist|compare|classify ...");
}
