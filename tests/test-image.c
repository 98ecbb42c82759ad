/* Tests of ddim/image.h: PNG round trips, resizing and channel conversion on
 * load, grids, PSNR and the errors users see. */
#include "ddim/image.h"
#include "ddim/error.h"

#include <math.h>
#include <string.h>
#include <glib/gstdio.h>
#include <gdk-pixbuf/gdk-pixbuf.h>

typedef struct {
  char *dir;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  (void) data;
  g_autoptr(GError) error = NULL;
  f->dir = g_dir_make_tmp ("ddim-test-image-XXXXXX", &error);
  g_assert_no_error (error);
  g_assert_nonnull (f->dir);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  (void) data;
  g_autoptr(GDir) dir = g_dir_open (f->dir, 0, NULL);
  if (dir != NULL)
    {
      const char *name;
      while ((name = g_dir_read_name (dir)) != NULL)
        {
          g_autofree char *path = g_build_filename (f->dir, name, NULL);
          g_assert_cmpint (g_remove (path), ==, 0);
        }
    }
  g_assert_cmpint (g_rmdir (f->dir), ==, 0);
  g_free (f->dir);
}

static char *
fixture_path (Fixture *f, const char *name)
{
  return g_build_filename (f->dir, name, NULL);
}

static int
count_files (Fixture *f)
{
  g_autoptr(GDir) dir = g_dir_open (f->dir, 0, NULL);
  int n = 0;
  g_assert_nonnull (dir);
  while (g_dir_read_name (dir) != NULL)
    n++;
  return n;
}

/* The value of pixel byte @v, computed as the library does. */
static float
q (int v)
{
  return (float) v / 127.5f - 1.0f;
}

static void
test_roundtrip_rgb (Fixture *f, gconstpointer data)
{
  (void) data;
  const int w = 16, h = 16, plane = w * h;
  g_autofree float *chw = g_new (float, 3 * plane);
  for (int i = 0; i < plane; i++)
    {
      chw[i] = q (i);                       /* every byte value once */
      chw[plane + i] = q (255 - i);
      chw[2 * plane + i] = q ((i * 7) % 256);
    }

  g_autofree char *path = fixture_path (f, "rgb.png");
  g_autoptr(GError) error = NULL;
  g_assert_true (ddim_image_save_png (path, 3, w, h, chw, &error));
  g_assert_no_error (error);

  g_autoptr(DdimImage) image = ddim_image_load (path, 3, 0, 0, &error);
  g_assert_no_error (error);
  g_assert_nonnull (image);
  g_assert_cmpint (image->channels, ==, 3);
  g_assert_cmpint (image->width, ==, w);
  g_assert_cmpint (image->height, ==, h);
  for (int i = 0; i < 3 * plane; i++)
    g_assert_cmpfloat (image->data[i], ==, chw[i]);

  /* The file is a real PNG that GdkPixbuf reads with the same bytes. */
  g_autoptr(GdkPixbuf) pixbuf = gdk_pixbuf_new_from_file (path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (gdk_pixbuf_get_width (pixbuf), ==, w);
  const guint8 *p = gdk_pixbuf_read_pixels (pixbuf);
  g_assert_cmpint (p[0], ==, 0);
  g_assert_cmpint (p[1], ==, 255);
  g_assert_cmpint (p[2], ==, 0);
}

static void
test_roundtrip_gray (Fixture *f, gconstpointer data)
{
  (void) data;
  const int w = 32, h = 8;
  g_autofree float *chw = g_new (float, w * h);
  for (int i = 0; i < w * h; i++)
    chw[i] = q ((i * 37) % 256);

  g_autofree char *path = fixture_path (f, "gray.png");
  g_autoptr(GError) error = NULL;
  g_assert_true (ddim_image_save_png (path, 1, w, h, chw, &error));
  g_assert_no_error (error);

  g_autoptr(DdimImage) image = ddim_image_load (path, 1, 0, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (image->channels, ==, 1);
  g_assert_cmpint (image->width, ==, w);
  g_assert_cmpint (image->height, ==, h);
  for (int i = 0; i < w * h; i++)
    g_assert_cmpfloat (image->data[i], ==, chw[i]);

  /* Gray -> 3 channels replicates the value. */
  g_autoptr(DdimImage) rgb = ddim_image_load (path, 3, 0, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (rgb->channels, ==, 3);
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < w * h; i++)
      g_assert_cmpfloat (rgb->data[c * w * h + i], ==, chw[i]);
}

static void
test_quantisation (Fixture *f, gconstpointer data)
{
  (void) data;
  const float values[] = { 0.3f, -0.3f, 2.0f, -5.0f, NAN, INFINITY, -INFINITY, 1.0f, -1.0f, 0.0f };
  const int expected[] = { 166, 89, 255, 0, 0, 255, 0, 255, 0, 128 };
  const int n = G_N_ELEMENTS (values);

  g_autofree char *path = fixture_path (f, "quant.png");
  g_autoptr(GError) error = NULL;
  g_assert_true (ddim_image_save_png (path, 1, n, 1, values, &error));
  g_assert_no_error (error);

  g_autoptr(DdimImage) image = ddim_image_load (path, 1, 0, 0, &error);
  g_assert_no_error (error);
  for (int i = 0; i < n; i++)
    g_assert_cmpfloat (image->data[i], ==, q (expected[i]));
}

static void
test_overwrite (Fixture *f, gconstpointer data)
{
  (void) data;
  const float a[4] = { -1, -1, -1, -1 }, b[4] = { 1, 1, 1, 1 };
  g_autofree char *path = fixture_path (f, "over.png");
  g_autoptr(GError) error = NULL;

  g_assert_true (ddim_image_save_png (path, 1, 2, 2, a, &error));
  g_assert_true (ddim_image_save_png (path, 1, 2, 2, b, &error));
  g_assert_no_error (error);
  g_assert_cmpint (count_files (f), ==, 1);   /* no temporary file left */

  g_autoptr(DdimImage) image = ddim_image_load (path, 1, 0, 0, &error);
  g_assert_no_error (error);
  for (int i = 0; i < 4; i++)
    g_assert_cmpfloat (image->data[i], ==, 1.0f);
}

static void
test_resize (Fixture *f, gconstpointer data)
{
  (void) data;
  const int w = 8, h = 6;
  g_autofree float *chw = g_new (float, 3 * w * h);
  for (int i = 0; i < w * h; i++)
    {
      chw[i] = q (200);
      chw[w * h + i] = q (100);
      chw[2 * w * h + i] = q (10);
    }
  g_autofree char *path = fixture_path (f, "resize.png");
  g_autoptr(GError) error = NULL;
  g_assert_true (ddim_image_save_png (path, 3, w, h, chw, &error));
  g_assert_no_error (error);

  const int sizes[][2] = { { 16, 12 }, { 4, 3 }, { 5, 9 }, { 8, 6 } };
  for (guint s = 0; s < G_N_ELEMENTS (sizes); s++)
    {
      int rw = sizes[s][0], rh = sizes[s][1];
      g_autoptr(DdimImage) image = ddim_image_load (path, 3, rw, rh, &error);
      g_assert_no_error (error);
      g_assert_cmpint (image->width, ==, rw);
      g_assert_cmpint (image->height, ==, rh);
      g_assert_cmpint (image->channels, ==, 3);
      /* A flat image stays flat (within one 8-bit step). */
      for (int i = 0; i < rw * rh; i++)
        {
          g_assert_cmpfloat_with_epsilon (image->data[i], q (200), 1.01 / 127.5);
          g_assert_cmpfloat_with_epsilon (image->data[rw * rh + i], q (100), 1.01 / 127.5);
          g_assert_cmpfloat_with_epsilon (image->data[2 * rw * rh + i], q (10), 1.01 / 127.5);
        }
    }

  /* A size of 0 keeps the file's size. */
  g_autoptr(DdimImage) native = ddim_image_load (path, 1, 0, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (native->width, ==, w);
  g_assert_cmpint (native->height, ==, h);
}

static void
test_rgb_to_gray (Fixture *f, gconstpointer data)
{
  (void) data;
  /* Pixels: red, green, blue, (10,20,30), gray 77. */
  const int r[] = { 255, 0, 0, 10, 77 };
  const int g[] = { 0, 255, 0, 20, 77 };
  const int b[] = { 0, 0, 255, 30, 77 };
  const int n = G_N_ELEMENTS (r);
  float chw[3 * G_N_ELEMENTS (r)];
  for (int i = 0; i < n; i++)
    {
      chw[i] = q (r[i]);
      chw[n + i] = q (g[i]);
      chw[2 * n + i] = q (b[i]);
    }
  g_autofree char *path = fixture_path (f, "colors.png");
  g_autoptr(GError) error = NULL;
  g_assert_true (ddim_image_save_png (path, 3, n, 1, chw, &error));
  g_assert_no_error (error);

  g_autoptr(DdimImage) image = ddim_image_load (path, 1, 0, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (image->channels, ==, 1);
  g_assert_cmpint (image->width, ==, n);
  for (int i = 0; i < n; i++)
    {
      double y = 0.2126 * r[i] + 0.7152 * g[i] + 0.0722 * b[i];
      g_assert_cmpfloat_with_epsilon (image->data[i], y / 127.5 - 1.0, 1e-5);
    }
  g_assert_cmpfloat (image->data[4], ==, q (77));   /* exact for gray pixels */
}

static void
test_alpha_dropped (Fixture *f, gconstpointer data)
{
  (void) data;
  g_autoptr(GdkPixbuf) pixbuf = gdk_pixbuf_new (GDK_COLORSPACE_RGB, TRUE, 8, 2, 1);
  guint8 *p = gdk_pixbuf_get_pixels (pixbuf);
  const guint8 px[8] = { 10, 20, 30, 0, 200, 100, 50, 128 };
  for (int i = 0; i < 8; i++)
    p[i] = px[i];
  g_autofree char *path = fixture_path (f, "alpha.png");
  g_autoptr(GError) error = NULL;
  g_assert_true (gdk_pixbuf_save (pixbuf, path, "png", &error, NULL));
  g_assert_no_error (error);

  g_autoptr(DdimImage) image = ddim_image_load (path, 3, 0, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (image->channels, ==, 3);
  g_assert_cmpfloat (image->data[0], ==, q (10));
  g_assert_cmpfloat (image->data[1], ==, q (200));
  g_assert_cmpfloat (image->data[2], ==, q (20));
  g_assert_cmpfloat (image->data[3], ==, q (100));
  g_assert_cmpfloat (image->data[4], ==, q (30));
  g_assert_cmpfloat (image->data[5], ==, q (50));
}

static void
test_new_from_data (void)
{
  const float chw[6] = { 1, 2, 3, 4, 5, 6 };
  g_autoptr(DdimImage) image = ddim_image_new_from_data (1, 3, 2, chw);
  g_assert_nonnull (image);
  g_assert_true (image->data != chw);
  g_assert_cmpint (image->channels, ==, 1);
  g_assert_cmpint (image->width, ==, 3);
  g_assert_cmpint (image->height, ==, 2);
  for (int i = 0; i < 6; i++)
    g_assert_cmpfloat (image->data[i], ==, chw[i]);
  ddim_image_free (NULL);
}

/* Checks the value at grid pixel (x, y), channel c. */
static float
grid_at (DdimImage *image, int c, int x, int y)
{
  return image->data[(gsize) c * image->width * image->height + (gsize) y * image->width + x];
}

static void
test_grid (Fixture *f, gconstpointer data)
{
  (void) data;
  const int n = 5, c = 3, w = 4, h = 3, cell = c * w * h;
  g_autofree float *nchw = g_new (float, n * cell);
  for (int k = 0; k < n; k++)
    for (int ch = 0; ch < c; ch++)
      for (int i = 0; i < w * h; i++)
        nchw[k * cell + ch * w * h + i] = q (10 * k + ch + 1 + i);

  g_autofree char *path = fixture_path (f, "grid.png");
  g_autoptr(GError) error = NULL;
  g_assert_true (ddim_image_save_grid_png (path, n, c, w, h, nchw, 3, &error));
  g_assert_no_error (error);

  g_autoptr(DdimImage) image = ddim_image_load (path, 3, 0, 0, &error);
  g_assert_no_error (error);
  /* 3 columns, ceil(5/3) = 2 rows, 2-pixel gaps between cells, no border. */
  g_assert_cmpint (image->width, ==, 3 * w + 2 * 2);
  g_assert_cmpint (image->height, ==, 2 * h + 1 * 2);

  for (int k = 0; k < n; k++)
    {
      int x0 = (k % 3) * (w + 2), y0 = (k / 3) * (h + 2);
      for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++)
          for (int x = 0; x < w; x++)
            g_assert_cmpfloat (grid_at (image, ch, x0 + x, y0 + y), ==,
                               nchw[k * cell + ch * w * h + y * w + x]);
    }
  /* Gaps and the empty sixth cell are white. */
  for (int ch = 0; ch < c; ch++)
    {
      g_assert_cmpfloat (grid_at (image, ch, w, 0), ==, 1.0f);
      g_assert_cmpfloat (grid_at (image, ch, w + 1, h - 1), ==, 1.0f);
      g_assert_cmpfloat (grid_at (image, ch, 0, h), ==, 1.0f);
      g_assert_cmpfloat (grid_at (image, ch, 0, h + 1), ==, 1.0f);
      g_assert_cmpfloat (grid_at (image, ch, image->width - 1, image->height - 1), ==, 1.0f);
    }

  /* One row when there are fewer images than columns; columns clamp to n. */
  g_autofree char *path2 = fixture_path (f, "grid2.png");
  g_assert_true (ddim_image_save_grid_png (path2, 2, 1, w, h, nchw, 8, &error));
  g_assert_no_error (error);
  g_autoptr(DdimImage) row = ddim_image_load (path2, 1, 0, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (row->width, ==, 2 * w + 2);
  g_assert_cmpint (row->height, ==, h);

  /* One column. */
  g_autofree char *path3 = fixture_path (f, "grid3.png");
  g_assert_true (ddim_image_save_grid_png (path3, 3, 1, w, h, nchw, 1, &error));
  g_assert_no_error (error);
  g_autoptr(DdimImage) column = ddim_image_load (path3, 1, 0, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (column->width, ==, w);
  g_assert_cmpint (column->height, ==, 3 * h + 2 * 2);

  /* Invalid counts are user errors. */
  g_autofree char *path4 = fixture_path (f, "grid4.png");
  g_assert_false (ddim_image_save_grid_png (path4, 2, 1, w, h, nchw, 0, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_false (g_file_test (path4, G_FILE_TEST_EXISTS));
}

static void
test_psnr (void)
{
  float a[64], b[64];
  for (int i = 0; i < 64; i++)
    {
      a[i] = (float) i / 64.0f - 0.5f;
      b[i] = a[i] + 0.25f;   /* exact in float */
    }
  double inf = ddim_psnr (a, a, 64);
  g_assert_true (isinf (inf) && inf > 0);
  g_assert_true (isinf (ddim_psnr (a, b, 0)));

  /* Offset 0.25 on [-1,1] = 0.125 on [0,1]: MSE 1/64, PSNR 10 log10 64. */
  g_assert_cmpfloat_with_epsilon (ddim_psnr (a, b, 64), 10.0 * log10 (64.0), 1e-9);
  g_assert_cmpfloat_with_epsilon (ddim_psnr (b, a, 64), 18.061799739838872, 1e-9);

  /* Full-range error: -1 vs 1 -> MSE 1 -> 0 dB. */
  const float lo[2] = { -1, -1 }, hi[2] = { 1, 1 };
  g_assert_cmpfloat_with_epsilon (ddim_psnr (lo, hi, 2), 0.0, 1e-12);

  /* Half the values off by 2 (MSE 1/2) -> 10 log10 2. */
  const float mixed[2] = { -1, 1 };
  g_assert_cmpfloat_with_epsilon (ddim_psnr (lo, mixed, 2), 10.0 * log10 (2.0), 1e-12);
}

static void
test_error_missing (Fixture *f, gconstpointer data)
{
  (void) data;
  g_autofree char *path = fixture_path (f, "does-not-exist.png");
  g_autoptr(GError) error = NULL;
  g_autoptr(DdimImage) image = ddim_image_load (path, 3, 0, 0, &error);
  g_assert_null (image);
  g_assert_nonnull (error);
  g_assert_true (error->domain == DDIM_ERROR);
  g_assert_true (error->code == DDIM_ERROR_IO || error->code == DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, path));
}

static void
test_error_not_image (Fixture *f, gconstpointer data)
{
  (void) data;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = fixture_path (f, "notes.png");
  g_assert_true (g_file_set_contents (path, "this is not an image\n", -1, &error));

  g_autoptr(DdimImage) image = ddim_image_load (path, 3, 0, 0, &error);
  g_assert_null (image);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, path));
  g_clear_error (&error);

  g_autofree char *empty = fixture_path (f, "empty.png");
  g_assert_true (g_file_set_contents (empty, "", 0, &error));
  g_autoptr(DdimImage) image2 = ddim_image_load (empty, 1, 0, 0, &error);
  g_assert_null (image2);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, empty));
}

static void
test_error_channels (Fixture *f, gconstpointer data)
{
  (void) data;
  const float px[4] = { 0, 0, 0, 0 };
  g_autofree char *path = fixture_path (f, "c.png");
  g_autoptr(GError) error = NULL;
  g_assert_true (ddim_image_save_png (path, 1, 2, 2, px, &error));

  g_autoptr(DdimImage) image = ddim_image_load (path, 2, 0, 0, &error);
  g_assert_null (image);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);

  g_autofree char *path2 = fixture_path (f, "c2.png");
  g_assert_false (ddim_image_save_png (path2, 4, 1, 1, px, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_false (g_file_test (path2, G_FILE_TEST_EXISTS));
}

static void
test_error_save_missing_folder (Fixture *f, gconstpointer data)
{
  (void) data;
  const float px[3] = { 0, 0.5f, 1 };
  g_autofree char *path = g_build_filename (f->dir, "no-such-folder", "out.png", NULL);
  g_autoptr(GError) error = NULL;
  g_assert_false (ddim_image_save_png (path, 3, 1, 1, px, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, path));
  g_clear_error (&error);

  g_assert_false (ddim_image_save_grid_png (path, 1, 3, 1, 1, px, 1, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, path));
  g_assert_cmpint (count_files (f), ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

#define ADD(name, fn) g_test_add (name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("/image/roundtrip-rgb", test_roundtrip_rgb);
  ADD ("/image/roundtrip-gray", test_roundtrip_gray);
  ADD ("/image/quantisation", test_quantisation);
  ADD ("/image/overwrite", test_overwrite);
  ADD ("/image/resize", test_resize);
  ADD ("/image/rgb-to-gray", test_rgb_to_gray);
  ADD ("/image/alpha-dropped", test_alpha_dropped);
  ADD ("/image/grid", test_grid);
  ADD ("/image/error-missing", test_error_missing);
  ADD ("/image/error-not-image", test_error_not_image);
  ADD ("/image/error-channels", test_error_channels);
  ADD ("/image/error-save-missing-folder", test_error_save_missing_folder);
#undef ADD
  g_test_add_func ("/image/new-from-data", test_new_from_data);
  g_test_add_func ("/image/psnr", test_psnr);

  return g_test_run ();
}
