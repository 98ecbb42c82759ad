/* Tests for the safetensors reader and writer (core/src/io/safetensors.c). */

#include "ddim/safetensors.h"
#include "ddim/error.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

/* A safetensors file in memory: the 8-byte little-endian @header_len, then
 * @json (not padded), then @data_len zero-filled tensor bytes (or @data). */
static GBytes *
make_file_raw (guint64 header_len, const char *json, const void *data, gsize data_len)
{
  GByteArray *a = g_byte_array_new ();
  guint64 le = GUINT64_TO_LE (header_len);
  g_byte_array_append (a, (const guint8 *) &le, 8);
  if (json != NULL)
    g_byte_array_append (a, (const guint8 *) json, (guint) strlen (json));
  for (gsize i = 0; i < data_len; i++)
    {
      guint8 byte = data != NULL ? ((const guint8 *) data)[i] : 0;
      g_byte_array_append (a, &byte, 1);
    }
  return g_byte_array_free_to_bytes (a);
}

/* Same, with the header length equal to the JSON length. */
static GBytes *
make_file (const char *json, const void *data, gsize data_len)
{
  return make_file_raw (strlen (json), json, data, data_len);
}

/* Parses @json + @data_len bytes and asserts the error and that its message
 * contains @needle. */
static void
assert_bad (const char *json, gsize data_len, gint code, const char *needle)
{
  g_autoptr (GBytes) bytes = make_file (json, NULL, data_len);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_null (st);
  g_assert_error (error, DDIM_ERROR, code);
  if (strstr (error->message, needle) == NULL)
    g_error ("message '%s' lacks '%s'", error->message, needle);
}

static void
assert_message_contains (const GError *error, const char *needle)
{
  g_assert_nonnull (error);
  if (strstr (error->message, needle) == NULL)
    g_error ("message '%s' lacks '%s'", error->message, needle);
}

static gboolean
same_bits (float a, float b)
{
  return memcmp (&a, &b, sizeof a) == 0;
}

static float
bits_f32 (guint32 u)
{
  float f;
  memcpy (&f, &u, sizeof f);
  return f;
}

static guint32
f32_bits (float f)
{
  guint32 u;
  memcpy (&u, &f, sizeof u);
  return u;
}

/* Exact value of a finite half, computed independently of the library. */
static double
half_value (guint16 h)
{
  int exp = (h >> 10) & 0x1f;
  int mant = h & 0x3ff;
  double v = exp == 0 ? ldexp (mant, -24) : ldexp (mant + 1024, exp - 25);
  return (h & 0x8000) ? -v : v;
}

/* ---------------------------------------------------- half conversions */

static void
test_f16_special (void)
{
  g_assert_true (same_bits (ddim_f16_to_f32 (0x0000), 0.0f));
  g_assert_true (same_bits (ddim_f16_to_f32 (0x8000), -0.0f));
  g_assert_cmpfloat (ddim_f16_to_f32 (0x3c00), ==, 1.0f);
  g_assert_cmpfloat (ddim_f16_to_f32 (0xc000), ==, -2.0f);
  g_assert_cmpfloat (ddim_f16_to_f32 (0x7bff), ==, 65504.0f);
  g_assert_cmpfloat (ddim_f16_to_f32 (0x0001), ==, ldexpf (1.0f, -24));
  g_assert_cmpfloat (ddim_f16_to_f32 (0x03ff), ==, ldexpf (1023.0f, -24));
  g_assert_cmpfloat (ddim_f16_to_f32 (0x0400), ==, ldexpf (1.0f, -14));
  g_assert_true (isinf (ddim_f16_to_f32 (0x7c00)) && ddim_f16_to_f32 (0x7c00) > 0);
  g_assert_true (isinf (ddim_f16_to_f32 (0xfc00)) && ddim_f16_to_f32 (0xfc00) < 0);
  g_assert_true (isnan (ddim_f16_to_f32 (0x7e00)));
  g_assert_true (isnan (ddim_f16_to_f32 (0x7c01)));
  g_assert_true (isnan (ddim_f16_to_f32 (0xfe00)));

  /* Every half: exact value, and f16 -> f32 -> f16 is the identity. */
  for (guint32 i = 0; i < 0x10000; i++)
    {
      guint16 h = (guint16) i;
      float f = ddim_f16_to_f32 (h);
      if (((h >> 10) & 0x1f) == 0x1f)
        {
          if (h & 0x3ff)
            {
              g_assert_true (isnan (f));
              g_assert_true ((ddim_f32_to_f16 (f) & 0x7c00) == 0x7c00 &&
                             (ddim_f32_to_f16 (f) & 0x3ff) != 0);
            }
          else
            g_assert_true (isinf (f));
          continue;
        }
      if ((double) f != half_value (h))
        g_error ("half 0x%04x gives %.10g, expected %.10g", h, f, half_value (h));
      g_assert_cmphex (ddim_f32_to_f16 (f), ==, h);
    }
}

static void
test_f32_to_f16_rounding (void)
{
  g_assert_cmphex (ddim_f32_to_f16 (0.0f), ==, 0x0000);
  g_assert_cmphex (ddim_f32_to_f16 (-0.0f), ==, 0x8000);
  g_assert_cmphex (ddim_f32_to_f16 (65519.0f), ==, 0x7bff);
  g_assert_cmphex (ddim_f32_to_f16 (65520.0f), ==, 0x7c00);  /* tie -> even = inf */
  g_assert_cmphex (ddim_f32_to_f16 (-1e6f), ==, 0xfc00);
  g_assert_cmphex (ddim_f32_to_f16 (INFINITY), ==, 0x7c00);
  g_assert_cmphex (ddim_f32_to_f16 (-INFINITY), ==, 0xfc00);
  g_assert_cmphex (ddim_f32_to_f16 (ldexpf (1.0f, -25)), ==, 0x0000); /* tie -> 0 */
  g_assert_cmphex (ddim_f32_to_f16 (-ldexpf (1.0f, -25)), ==, 0x8000);
  g_assert_cmphex (ddim_f32_to_f16 (nextafterf (ldexpf (1.0f, -25), 1.0f)), ==, 0x0001);
  g_assert_cmphex (ddim_f32_to_f16 (ldexpf (3.0f, -25)), ==, 0x0002); /* tie -> even */
  g_assert_cmphex (ddim_f32_to_f16 (ldexpf (5.0f, -25)), ==, 0x0002); /* tie -> even */
  g_assert_cmphex (ddim_f32_to_f16 (1.0f + ldexpf (1.0f, -11)), ==, 0x3c00);
  g_assert_cmphex (ddim_f32_to_f16 (1.0f + ldexpf (3.0f, -11)), ==, 0x3c02);
  g_assert_cmphex (ddim_f32_to_f16 (ldexpf (2047.0f, -25)), ==, 0x0400); /* to normal */
  g_assert_cmphex (ddim_f32_to_f16 (1e-30f), ==, 0x0000);
  g_assert_true ((ddim_f32_to_f16 (NAN) & 0x7fff) > 0x7c00);

  /* A deterministic sweep of the float bit patterns: the result is the
   * nearest half, ties to even, with overflow to infinity. */
  for (guint64 u = 0; u <= 0xffffffffu; u += 4093)
    {
      float f = bits_f32 ((guint32) u);
      if (isnan (f))
        continue;
      guint16 h = ddim_f32_to_f16 (f);
      guint16 mag = h & 0x7fff;
      double a = fabs ((double) f);
      g_assert_cmpint (!!(h & 0x8000), ==, !!signbit (f));
      if (a >= 65520.0)
        {
          g_assert_cmphex (mag, ==, 0x7c00);
          continue;
        }
      g_assert_cmphex (mag, <, 0x7c00);
      double err = fabs (half_value (mag) - a);
      if (mag > 0)
        {
          double lower = fabs (half_value (mag - 1) - a);
          g_assert_true (err < lower || (err == lower && (mag & 1) == 0));
        }
      if (mag < 0x7bff)
        {
          double upper = fabs (half_value (mag + 1) - a);
          g_assert_true (err < upper || (err == upper && (mag & 1) == 0));
        }
      else
        g_assert_true (a < 65520.0);
    }
}

static void
test_bf16_special (void)
{
  g_assert_cmpfloat (ddim_bf16_to_f32 (0x3f80), ==, 1.0f);
  g_assert_cmpfloat (ddim_bf16_to_f32 (0xc040), ==, -3.0f);
  g_assert_true (same_bits (ddim_bf16_to_f32 (0x8000), -0.0f));
  g_assert_true (isinf (ddim_bf16_to_f32 (0x7f80)) && ddim_bf16_to_f32 (0x7f80) > 0);
  g_assert_true (isinf (ddim_bf16_to_f32 (0xff80)) && ddim_bf16_to_f32 (0xff80) < 0);
  g_assert_true (isnan (ddim_bf16_to_f32 (0x7fc0)));
  g_assert_cmpfloat (ddim_bf16_to_f32 (0x0001), ==, ldexpf (1.0f, -133));
  for (guint32 i = 0; i < 0x10000; i++)
    g_assert_cmphex (f32_bits (ddim_bf16_to_f32 ((guint16) i)), ==, i << 16);
}

/* ----------------------------------------------------------- round trips */

static void
test_roundtrip_f32 (void)
{
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  const gint64 shape_a[2] = { 2, 3 };
  const float a[6] = { 1.0f, -2.5f, 3.25f, 1e-40f, INFINITY, -0.0f };
  const gint64 shape_empty[2] = { 0, 5 };
  const float scalar = 42.0f;

  ddim_safetensors_writer_add_metadata (w, "format", "pt");
  ddim_safetensors_writer_add_metadata (w, "note", "quote \" backslash \\ é");
  ddim_safetensors_writer_add_f32 (w, "z.weight", 2, shape_a, a);
  ddim_safetensors_writer_add_f32 (w, "empty", 2, shape_empty, NULL);
  ddim_safetensors_writer_add_f32 (w, "a.scalar", 0, NULL, &scalar);

  g_autoptr (GBytes) bytes = ddim_safetensors_writer_to_bytes (w);
  gsize size;
  const guint8 *raw = g_bytes_get_data (bytes, &size);
  guint64 header_len;
  memcpy (&header_len, raw, 8);
  header_len = GUINT64_FROM_LE (header_len);
  g_assert_cmpuint (header_len % 8, ==, 0);
  g_assert_cmpuint (8 + header_len + 6 * 4 + 4, ==, size);
  g_assert_true (memcmp (raw + 8, "{\"__metadata__\"", 15) == 0);
  /* Keys in the order added. */
  g_autofree char *header = g_strndup ((const char *) raw + 8, header_len);
  const char *pz = strstr (header, "\"z.weight\"");
  const char *pe = strstr (header, "\"empty\"");
  const char *ps = strstr (header, "\"a.scalar\"");
  g_assert_true (pz != NULL && pe != NULL && ps != NULL && pz < pe && pe < ps);

  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_no_error (error);
  g_assert_nonnull (st);
  g_assert_true (ddim_safetensors_get_bytes (st) == bytes);
  g_assert_cmpuint (ddim_safetensors_get_n_tensors (st), ==, 3);
  g_assert_cmpstr (ddim_safetensors_get_metadata (st, "format"), ==, "pt");
  g_assert_cmpstr (ddim_safetensors_get_metadata (st, "note"), ==,
                   "quote \" backslash \\ é");
  g_assert_null (ddim_safetensors_get_metadata (st, "absent"));

  /* File (offset) order; the empty tensor sits at offset 24, before the
   * scalar that also begins there. */
  const DdimTensorInfo *i0 = ddim_safetensors_get_info_nth (st, 0);
  const DdimTensorInfo *i1 = ddim_safetensors_get_info_nth (st, 1);
  const DdimTensorInfo *i2 = ddim_safetensors_get_info_nth (st, 2);
  g_assert_cmpstr (i0->name, ==, "z.weight");
  g_assert_cmpstr (i1->name, ==, "empty");
  g_assert_cmpstr (i2->name, ==, "a.scalar");
  g_assert_cmpint (i1->n_elements, ==, 0);
  g_assert_cmpuint (i1->n_bytes, ==, 0);
  g_assert_cmpint (i2->ndim, ==, 0);
  g_assert_cmpint (i2->n_elements, ==, 1);

  const DdimTensorInfo *info = ddim_safetensors_lookup (st, "z.weight");
  g_assert_true (info == i0);
  g_assert_null (ddim_safetensors_lookup (st, "nope"));
  g_assert_cmpint (info->dtype, ==, DDIM_DTYPE_F32);
  g_assert_cmpint (info->ndim, ==, 2);
  g_assert_cmpint (info->shape[0], ==, 2);
  g_assert_cmpint (info->shape[1], ==, 3);
  g_assert_cmpint (info->n_elements, ==, 6);
  g_assert_cmpuint (info->n_bytes, ==, 24);

  g_autofree float *got = ddim_safetensors_read_f32 (st, "z.weight", 2, shape_a, &error);
  g_assert_no_error (error);
  for (int i = 0; i < 6; i++)
    g_assert_true (same_bits (got[i], a[i]));

  g_autofree float *s = ddim_safetensors_read_f32 (st, "a.scalar", 0, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (s[0], ==, 42.0f);

  g_autofree float *e = ddim_safetensors_read_f32 (st, "empty", 2, shape_empty, &error);
  g_assert_no_error (error);
  g_assert_nonnull (e);
}

static void
test_roundtrip_f16 (void)
{
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  const gint64 shape[1] = { 8 };
  const float v[8] = { 0.1f, -1.0f, 65504.0f, 1e5f, ldexpf (1.0f, -24), 3.14159f,
                       -0.0f, 1.0f + ldexpf (1.0f, -11) };
  ddim_safetensors_writer_add_f16 (w, "h", 1, shape, v);
  g_autoptr (GBytes) bytes = ddim_safetensors_writer_to_bytes (w);
  gsize size;
  const guint8 *raw = g_bytes_get_data (bytes, &size);
  g_assert_true (memcmp (raw + 8, "{\"h\"", 4) == 0); /* no metadata */

  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_no_error (error);
  const DdimTensorInfo *info = ddim_safetensors_lookup (st, "h");
  g_assert_nonnull (info);
  g_assert_cmpint (info->dtype, ==, DDIM_DTYPE_F16);
  g_assert_cmpuint (info->n_bytes, ==, 16);
  g_autofree float *got = ddim_safetensors_read_f32 (st, "h", 1, shape, &error);
  g_assert_no_error (error);
  for (int i = 0; i < 8; i++)
    g_assert_true (same_bits (got[i], ddim_f16_to_f32 (ddim_f32_to_f16 (v[i]))));
  g_assert_cmpfloat (got[2], ==, 65504.0f);
  g_assert_true (isinf (got[3]));
  g_assert_cmpfloat (got[4], ==, ldexpf (1.0f, -24));
  g_assert_cmpfloat (got[7], ==, 1.0f);
  g_assert_cmpfloat (fabsf (got[0] - 0.1f), <, 1e-4f);
}

static void
test_roundtrip_empty (void)
{
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  g_autoptr (GBytes) bytes = ddim_safetensors_writer_to_bytes (w);
  g_assert_cmpuint (g_bytes_get_size (bytes), ==, 16);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_safetensors_get_n_tensors (st), ==, 0);
}

static void
test_roundtrip_save (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("ddim-st-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *path = g_build_filename (dir, "out.safetensors", NULL);

  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  const gint64 shape[3] = { 2, 1, 2 };
  const float v[4] = { 1, 2, 3, 4 };
  ddim_safetensors_writer_add_f32 (w, "t", 3, shape, v);
  ddim_safetensors_writer_add_metadata (w, "format", "pt");
  g_assert_true (ddim_safetensors_writer_save (w, path, &error));
  g_assert_no_error (error);
  /* Saving again replaces the file. */
  g_assert_true (ddim_safetensors_writer_save (w, path, &error));
  g_assert_no_error (error);

  {
    g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, &error);
    g_assert_no_error (error);
    g_autofree float *got = ddim_safetensors_read_f32 (st, "t", 3, shape, &error);
    g_assert_no_error (error);
    g_assert_cmpmem (got, sizeof v, v, sizeof v);
    g_assert_cmpstr (ddim_safetensors_get_metadata (st, "format"), ==, "pt");
  }

  /* Only the file itself is left in the folder (no temporary files). */
  g_autoptr (GDir) d = g_dir_open (dir, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (g_dir_read_name (d), ==, "out.safetensors");
  g_assert_null (g_dir_read_name (d));

  g_assert_cmpint (g_unlink (path), ==, 0);
  g_assert_cmpint (g_rmdir (dir), ==, 0);
}

static void
test_read_other_dtypes (void)
{
  /* BF16 [1, -3], F64 [0.5], I64 [-7], I32 [123456], U8 [9] */
  guint8 data[4 + 8 + 8 + 4 + 1];
  guint16 bf[2] = { GUINT16_TO_LE (0x3f80), GUINT16_TO_LE (0xc040) };
  double d = 0.5;
  guint64 d_bits;
  memcpy (&d_bits, &d, 8);
  d_bits = GUINT64_TO_LE (d_bits);
  guint64 i64 = GUINT64_TO_LE ((guint64) (gint64) -7);
  guint32 i32 = GUINT32_TO_LE (123456u);
  memcpy (data, bf, 4);
  memcpy (data + 4, &d_bits, 8);
  memcpy (data + 12, &i64, 8);
  memcpy (data + 20, &i32, 4);
  data[24] = 9;
  g_autoptr (GBytes) bytes = make_file (
      "{\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
      "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[4,12]},"
      "\"l\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[12,20]},"
      "\"i\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[20,24]},"
      "\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[24,25]}}   ",
      data, sizeof data);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_safetensors_get_n_tensors (st), ==, 5);

  g_autofree float *b = ddim_safetensors_read_f32 (st, "b", 0, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (b[0], ==, 1.0f);
  g_assert_cmpfloat (b[1], ==, -3.0f);
  g_autofree float *df = ddim_safetensors_read_f32 (st, "d", 0, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (df[0], ==, 0.5f);
  g_autofree float *l = ddim_safetensors_read_f32 (st, "l", 0, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (l[0], ==, -7.0f);
  g_autofree float *i = ddim_safetensors_read_f32 (st, "i", 0, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (i[0], ==, 123456.0f);

  const DdimTensorInfo *u = ddim_safetensors_lookup (st, "u");
  g_assert_cmpint (u->dtype, ==, DDIM_DTYPE_U8);
  g_assert_cmpuint (u->data[0], ==, 9);
  float out;
  g_assert_false (ddim_tensor_info_to_f32 (u, &out, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED);
  assert_message_contains (error, "tensor 'u' has dtype U8");
  g_clear_error (&error);
  g_autofree float *uf = ddim_safetensors_read_f32 (st, "u", 0, NULL, &error);
  g_assert_null (uf);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED);

  g_assert_cmpstr (ddim_dtype_name (DDIM_DTYPE_BF16), ==, "BF16");
  g_assert_cmpuint (ddim_dtype_size (DDIM_DTYPE_F64), ==, 8);
  g_assert_cmpuint (ddim_dtype_size (DDIM_DTYPE_BOOL), ==, 1);
}

/* ------------------------------------------------------------- fixtures */

static char *
fixture_path (const char *variant)
{
  const char *dir = g_getenv ("DDIM_FIXTURES_DIR");
  if (dir == NULL || *dir == '\0')
    return NULL;
  return g_build_filename (dir, "diffusers", variant, "diffusion_pytorch_model.safetensors",
                           NULL);
}

/* Checks what holds for every valid file: offset order, contiguity. */
static void
check_layout (DdimSafetensors *st)
{
  GBytes *bytes = ddim_safetensors_get_bytes (st);
  gsize size;
  const guint8 *base = g_bytes_get_data (bytes, &size);
  guint64 header_len;
  memcpy (&header_len, base, 8);
  header_len = GUINT64_FROM_LE (header_len);
  const guint8 *p = base + 8 + header_len;
  for (guint i = 0; i < ddim_safetensors_get_n_tensors (st); i++)
    {
      const DdimTensorInfo *info = ddim_safetensors_get_info_nth (st, i);
      g_assert_true (info->data == p);
      g_assert_true (ddim_safetensors_lookup (st, info->name) == info);
      g_assert_cmpuint (info->n_bytes, ==,
                        (gsize) info->n_elements * ddim_dtype_size (info->dtype));
      p += info->n_bytes;
    }
  g_assert_true (p == base + size);
}

static void
test_fixture_tiny_cifar (void)
{
  g_autofree char *path = fixture_path ("tiny-cifar");
  if (path == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR is not set");
      return;
    }
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, &error);
  g_assert_no_error (error);
  /* 269 header entries: 268 tensors and "__metadata__". */
  g_assert_cmpuint (ddim_safetensors_get_n_tensors (st), ==, 268);
  g_assert_cmpstr (ddim_safetensors_get_metadata (st, "format"), ==, "pt");
  check_layout (st);
  for (guint i = 0; i < 268; i++)
    g_assert_cmpint (ddim_safetensors_get_info_nth (st, i)->dtype, ==, DDIM_DTYPE_F32);

  const DdimTensorInfo *first = ddim_safetensors_get_info_nth (st, 0);
  g_assert_cmpstr (first->name, ==, "conv_in.bias");

  const gint64 shape[4] = { 32, 3, 3, 3 };
  g_autofree float *w = ddim_safetensors_read_f32 (st, "conv_in.weight", 4, shape, &error);
  g_assert_no_error (error);
  g_assert_nonnull (w);
  const gint64 bshape[1] = { 32 };
  g_autofree float *b = ddim_safetensors_read_f32 (st, "conv_in.bias", 1, bshape, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (b[0], ==, 0.04524949938058853f);
  g_assert_cmpfloat (b[1], ==, 0.2025599181652069f);

  /* Wrong expected shape on a real tensor: the message names both shapes. */
  const gint64 wrong[4] = { 32, 1, 3, 3 };
  g_autofree float *x = ddim_safetensors_read_f32 (st, "conv_in.weight", 4, wrong, &error);
  g_assert_null (x);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  assert_message_contains (error, "diffusion_pytorch_model.safetensors: ");
  assert_message_contains (error, "tensor 'conv_in.weight' has shape [32, 3, 3, 3], "
                                  "expected [32, 1, 3, 3]");
}

static void
test_fixture_tiny_variant (void)
{
  g_autofree char *path = fixture_path ("tiny-variant");
  if (path == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR is not set");
      return;
    }
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_safetensors_get_n_tensors (st), ==, 182);
  check_layout (st);
  for (guint i = 0; i < ddim_safetensors_get_n_tensors (st); i++)
    {
      const DdimTensorInfo *info = ddim_safetensors_get_info_nth (st, i);
      g_assert_cmpint (info->dtype, ==, DDIM_DTYPE_F16);
      g_autofree float *v = ddim_safetensors_read_f32 (st, info->name, 0, NULL, &error);
      g_assert_no_error (error);
      for (gint64 j = 0; j < info->n_elements; j++)
        g_assert_true (isfinite (v[j]));
    }
  const gint64 shape[1] = { 32 };
  g_autofree float *b = ddim_safetensors_read_f32 (st, "conv_in.bias", 1, shape, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (b[0], ==, 0.1685791015625f);
  g_assert_cmpfloat (b[1], ==, -0.13232421875f);
  g_assert_cmpfloat (b[2], ==, -0.314453125f);
  g_assert_cmpfloat (b[3], ==, -0.2198486328125f);
}

/* ------------------------------------------------------------ bad input */

#define T(name, dtype, shape, b, e) \
  "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void
test_bad_too_short (void)
{
  g_autoptr (GBytes) bytes = g_bytes_new_static ("\x08\0\0\0\0", 5);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_null (st);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  assert_message_contains (error, "too short");
  assert_message_contains (error, "5 bytes");
}

static void
test_bad_header_too_large (void)
{
  g_autoptr (GBytes) bytes = make_file_raw (100000001, "{}", NULL, 0);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_null (st);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  assert_message_contains (error, "header length 100000001 exceeds the limit of 100000000");

  /* Also a huge length that could overflow 8 + N. */
  g_autoptr (GBytes) bytes2 = make_file_raw (G_MAXUINT64, "{}", NULL, 0);
  g_autoptr (GError) error2 = NULL;
  g_autoptr (DdimSafetensors) st2 = ddim_safetensors_new_from_bytes (bytes2, &error2);
  g_assert_null (st2);
  g_assert_error (error2, DDIM_ERROR, DDIM_ERROR_FORMAT);
  assert_message_contains (error2, "exceeds the limit");
}

static void
test_bad_header_past_end (void)
{
  g_autoptr (GBytes) bytes = make_file_raw (4000, "{}", NULL, 86);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_null (st);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  assert_message_contains (error, "header length 4000 runs past the end of the file (96 bytes)");
}

static void
test_bad_truncated (void)
{
  assert_bad ("{" T ("a", "F32", "[2]", 0, 8) "," T ("conv_in.weight", "F32", "[4]", 8, 24) "}",
              20, DDIM_ERROR_FORMAT, "tensor 'conv_in.weight' ends at byte 24, file data has 20");
}

static void
test_bad_trailing (void)
{
  assert_bad ("{" T ("a", "F32", "[2]", 0, 8) "}", 12, DDIM_ERROR_FORMAT,
              "file has 12 bytes of tensor data but the tensors end at byte 8");
}

static void
test_bad_overlap (void)
{
  assert_bad ("{" T ("a", "F32", "[2]", 0, 8) "," T ("b", "F32", "[2]", 4, 12) "}",
              12, DDIM_ERROR_FORMAT, "tensors 'a' and 'b' overlap or are out of order");
}

static void
test_bad_hole (void)
{
  /* Listed out of order, and with 4 bytes nobody owns between them. */
  assert_bad ("{" T ("b", "F32", "[2]", 12, 20) "," T ("a", "F32", "[2]", 0, 8) "}",
              20, DDIM_ERROR_FORMAT,
              "hole in the tensor data between tensors 'a' (ends at byte 8) and 'b' "
              "(begins at byte 12)");
}

static void
test_bad_not_from_zero (void)
{
  assert_bad ("{" T ("a", "F32", "[2]", 4, 12) "}", 12, DDIM_ERROR_FORMAT,
              "the first tensor 'a' begins at byte 4 instead of 0");
}

static void
test_bad_unknown_dtype (void)
{
  assert_bad ("{" T ("x", "F8_E4M3", "[2]", 0, 2) "}", 2, DDIM_ERROR_FORMAT,
              "unknown dtype 'F8_E4M3' for tensor 'x'");
}

static void
test_bad_size_mismatch (void)
{
  assert_bad ("{" T ("x", "F16", "[3, 4]", 0, 48) "}", 48, DDIM_ERROR_FORMAT,
              "tensor 'x' has dtype F16 and shape [3, 4] (24 bytes) but data_offsets "
              "[0, 48] span 48 bytes");
}

static void
test_bad_json (void)
{
  assert_bad ("{\"x\": {\"dtype\": \"F32\",", 0, DDIM_ERROR_FORMAT,
              "header is not valid JSON: ");
}

static void
test_bad_not_object (void)
{
  assert_bad ("[1, 2, 3]", 0, DDIM_ERROR_FORMAT, "header is not a JSON object");
  assert_bad ("{\"x\": 5}", 0, DDIM_ERROR_FORMAT, "header entry for tensor 'x' is not an object");
}

static void
test_bad_missing_fields (void)
{
  assert_bad ("{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DDIM_ERROR_FORMAT,
              "tensor 'x' has no \"dtype\"");
  assert_bad ("{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, DDIM_ERROR_FORMAT,
              "tensor 'x' has no \"shape\"");
  assert_bad ("{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, DDIM_ERROR_FORMAT,
              "tensor 'x' has no \"data_offsets\"");
  assert_bad ("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
              DDIM_ERROR_FORMAT, "\"data_offsets\" of tensor 'x' is not an array of two");
  assert_bad ("{\"x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
              DDIM_ERROR_FORMAT, "\"shape\" of tensor 'x' has a dimension 0 that is not an");
  assert_bad ("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 4,
              DDIM_ERROR_FORMAT, "tensor 'x' has invalid data_offsets [8, 4]");
}

static void
test_bad_negative_dim (void)
{
  assert_bad ("{" T ("x", "F32", "[2, -1]", 0, 0) "}", 0, DDIM_ERROR_FORMAT,
              "tensor 'x' has negative dimension -1");
}

static void
test_bad_shape_overflow (void)
{
  assert_bad ("{" T ("x", "F32", "[4294967296, 4294967296]", 0, 0) "}", 0,
              DDIM_ERROR_FORMAT, "tensor 'x' has shape [4294967296, 4294967296] whose size overflows");
  /* Fits in 64 bits as elements, not as bytes. */
  assert_bad ("{" T ("x", "F32", "[4611686018427387904]", 0, 0) "}", 0,
              DDIM_ERROR_FORMAT, "whose size overflows");
}

static void
test_bad_too_many_dims (void)
{
  assert_bad ("{" T ("x", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4,
              DDIM_ERROR_UNSUPPORTED, "tensor 'x' has 9 dimensions, at most 8");
}

static void
test_bad_metadata (void)
{
  assert_bad ("{\"__metadata__\":{\"format\":5}}", 0, DDIM_ERROR_FORMAT,
              "value for key 'format' is not a string");
  assert_bad ("{\"__metadata__\":[]}", 0, DDIM_ERROR_FORMAT,
              "\"__metadata__\" in the header is not an object");
}

static void
test_bad_utf8 (void)
{
  assert_bad ("{\"\xff\": 1}", 0, DDIM_ERROR_FORMAT, "header is not valid UTF-8");
}

static void
test_missing_tensor (void)
{
  g_autoptr (GBytes) bytes = make_file ("{" T ("a", "F32", "[1]", 0, 4) "}", NULL, 4);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_no_error (error);
  g_autofree float *v = ddim_safetensors_read_f32 (st, "conv_in.weight", 0, NULL, &error);
  g_assert_null (v);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  assert_message_contains (error, "missing tensor 'conv_in.weight'");
}

static void
test_wrong_shape (void)
{
  g_autoptr (GBytes) bytes = make_file ("{" T ("x", "F32", "[3,4]", 0, 48) "}", NULL, 48);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  g_assert_no_error (error);
  const gint64 expected[2] = { 4, 3 };
  g_autofree float *v = ddim_safetensors_read_f32 (st, "x", 2, expected, &error);
  g_assert_null (v);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  assert_message_contains (error, "tensor 'x' has shape [3, 4], expected [4, 3]");
  g_clear_error (&error);

  const gint64 expected3[3] = { 3, 4, 1 };
  g_autofree float *v3 = ddim_safetensors_read_f32 (st, "x", 3, expected3, &error);
  g_assert_null (v3);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  assert_message_contains (error, "tensor 'x' has shape [3, 4], expected [3, 4, 1]");
}

/* A truncated file on disk: the error names the file. */
static void
test_bad_file_truncated (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = NULL;
  int fd = g_file_open_tmp ("weights-XXXXXX.safetensors", &path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (fd, >=, 0);
  g_close (fd, NULL);

  g_autoptr (GBytes) bytes = make_file ("{" T ("conv_in.weight", "F32", "[1024]", 0, 4096) "}",
                                        NULL, 1000);
  g_assert_true (g_file_set_contents (path, g_bytes_get_data (bytes, NULL),
                                      (gssize) g_bytes_get_size (bytes), &error));
  g_assert_no_error (error);

  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, &error);
  g_assert_null (st);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *prefix = g_strconcat (base, ": ", NULL);
  g_assert_true (g_str_has_prefix (error->message, prefix));
  assert_message_contains (error, "tensor 'conv_in.weight' ends at byte 4096, file data has 1000");
  g_clear_error (&error);

  /* An empty file. */
  g_assert_true (g_file_set_contents (path, "", 0, &error));
  g_autoptr (DdimSafetensors) st2 = ddim_safetensors_open (path, &error);
  g_assert_null (st2);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  assert_message_contains (error, "too short");
  g_assert_true (g_str_has_prefix (error->message, prefix));

  g_assert_cmpint (g_unlink (path), ==, 0);
}

static void
test_open_missing_file (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st =
      ddim_safetensors_open ("/nonexistent-ddim-dir/weights.safetensors", &error);
  g_assert_null (st);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  assert_message_contains (error, "/nonexistent-ddim-dir/weights.safetensors");
}

static void
test_save_bad_folder (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("ddim-st-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *path = g_build_filename (dir, "no-such-folder", "out.safetensors", NULL);

  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  const gint64 shape[1] = { 1 };
  const float v = 1.0f;
  ddim_safetensors_writer_add_f32 (w, "t", 1, shape, &v);
  g_assert_false (ddim_safetensors_writer_save (w, path, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  assert_message_contains (error, path);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));
  g_clear_error (&error);

  /* A folder in place of the file. */
  g_assert_false (ddim_safetensors_writer_save (w, dir, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  assert_message_contains (error, dir);

  g_assert_cmpint (g_rmdir (dir), ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/safetensors/f16/special", test_f16_special);
  g_test_add_func ("/safetensors/f16/rounding", test_f32_to_f16_rounding);
  g_test_add_func ("/safetensors/bf16/special", test_bf16_special);
  g_test_add_func ("/safetensors/roundtrip/f32", test_roundtrip_f32);
  g_test_add_func ("/safetensors/roundtrip/f16", test_roundtrip_f16);
  g_test_add_func ("/safetensors/roundtrip/empty", test_roundtrip_empty);
  g_test_add_func ("/safetensors/roundtrip/save", test_roundtrip_save);
  g_test_add_func ("/safetensors/read/other-dtypes", test_read_other_dtypes);
  g_test_add_func ("/safetensors/read/missing-tensor", test_missing_tensor);
  g_test_add_func ("/safetensors/read/wrong-shape", test_wrong_shape);
  g_test_add_func ("/safetensors/fixtures/tiny-cifar", test_fixture_tiny_cifar);
  g_test_add_func ("/safetensors/fixtures/tiny-variant", test_fixture_tiny_variant);
  g_test_add_func ("/safetensors/bad/too-short", test_bad_too_short);
  g_test_add_func ("/safetensors/bad/header-too-large", test_bad_header_too_large);
  g_test_add_func ("/safetensors/bad/header-past-end", test_bad_header_past_end);
  g_test_add_func ("/safetensors/bad/truncated", test_bad_truncated);
  g_test_add_func ("/safetensors/bad/trailing-bytes", test_bad_trailing);
  g_test_add_func ("/safetensors/bad/overlap", test_bad_overlap);
  g_test_add_func ("/safetensors/bad/hole", test_bad_hole);
  g_test_add_func ("/safetensors/bad/not-from-zero", test_bad_not_from_zero);
  g_test_add_func ("/safetensors/bad/unknown-dtype", test_bad_unknown_dtype);
  g_test_add_func ("/safetensors/bad/size-mismatch", test_bad_size_mismatch);
  g_test_add_func ("/safetensors/bad/malformed-json", test_bad_json);
  g_test_add_func ("/safetensors/bad/not-object", test_bad_not_object);
  g_test_add_func ("/safetensors/bad/missing-fields", test_bad_missing_fields);
  g_test_add_func ("/safetensors/bad/negative-dim", test_bad_negative_dim);
  g_test_add_func ("/safetensors/bad/shape-overflow", test_bad_shape_overflow);
  g_test_add_func ("/safetensors/bad/too-many-dims", test_bad_too_many_dims);
  g_test_add_func ("/safetensors/bad/metadata", test_bad_metadata);
  g_test_add_func ("/safetensors/bad/utf8", test_bad_utf8);
  g_test_add_func ("/safetensors/bad/file-truncated", test_bad_file_truncated);
  g_test_add_func ("/safetensors/io/open-missing", test_open_missing_file);
  g_test_add_func ("/safetensors/io/save-bad-folder", test_save_bad_folder);

  return g_test_run ();
}
