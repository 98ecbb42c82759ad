/* Tests for the torch.save reader (core/src/io/torch-*.c): the fixture
 * checkpoints, container unwrapping, and hostile or malformed inputs built
 * here with small pickle, zip and legacy-file builders. */

#include "ddim/torch-file.h"
#include "ddim/safetensors.h"
#include "ddim/error.h"

#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "torch-builders.h"

/* ------------------------------------------------------------ checking */

static void
assert_message (const GError *error, const char *needle)
{
  g_assert_nonnull (error);
  if (strstr (error->message, needle) == NULL)
    g_error ("message '%s' lacks '%s'", error->message, needle);
}

static void
assert_bad (GBytes *bytes, gint code, const char *needle)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimTorchFile) tf = ddim_torch_file_new_from_bytes (bytes, DDIM_TORCH_SELECT_EMA,
                                                                 &error);
  g_assert_null (tf);
  g_assert_error (error, DDIM_ERROR, code);
  assert_message (error, needle);
}

static void
assert_bad_pickle (GBytes *pkl, gint code, const char *needle)
{
  g_autoptr (GBytes) zip = make_torch_zip (pkl, 16, 16);
  assert_bad (zip, code, needle);
}

static DdimTorchFile *
load_ok (GBytes *bytes, DdimTorchSelect select)
{
  g_autoptr (GError) error = NULL;
  DdimTorchFile *tf = ddim_torch_file_new_from_bytes (bytes, select, &error);
  g_assert_no_error (error);
  g_assert_nonnull (tf);
  return tf;
}

static float
f32_at (const DdimTensorInfo *info, gsize i)
{
  g_assert_cmpint (info->dtype, ==, DDIM_DTYPE_F32);
  g_assert_cmpuint ((i + 1) * 4, <=, info->n_bytes);
  float x;
  memcpy (&x, info->data + 4 * i, 4);
  return x;
}

static gboolean
inside (const void *p, GBytes *bytes)
{
  gsize n;
  const guint8 *base = g_bytes_get_data (bytes, &n);
  return (const guint8 *) p >= base && (const guint8 *) p < base + n;
}

/* ------------------------------------------------------------ fixtures */

static char *
fixture (const char *relative)
{
  const char *dir = g_getenv ("DDIM_FIXTURES_DIR");
  if (dir == NULL || *dir == '\0')
    return NULL;
  return g_build_filename (dir, relative, NULL);
}

#define FIXTURE_OR_SKIP(var, rel)                                    \
  g_autofree char *var = fixture (rel);                              \
  if (var == NULL)                                                   \
    {                                                                \
      g_test_skip ("DDIM_FIXTURES_DIR is not set");                  \
      return;                                                        \
    }

static GBytes *
map_file (const char *path)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GMappedFile) mf = g_mapped_file_new (path, FALSE, &error);
  g_assert_no_error (error);
  return g_mapped_file_get_bytes (mf);
}

static void
test_fixture_ermongroup_list (void)
{
  FIXTURE_OR_SKIP (path, "torch/ermongroup/celeba-like/ckpt.pth");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimTorchFile) ema = ddim_torch_file_open (path, DDIM_TORCH_SELECT_EMA, &error);
  g_assert_no_error (error);
  g_autoptr (DdimTorchFile) model = ddim_torch_file_open (path, DDIM_TORCH_SELECT_MODEL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ddim_torch_file_get_format (ema), ==, DDIM_TORCH_FORMAT_ZIP);
  g_assert_cmpuint (ddim_torch_file_get_n_tensors (ema), ==, 182);
  g_assert_cmpuint (ddim_torch_file_get_n_tensors (model), ==, 182);
  /* Same names (the model's "module." prefix stripped), other storages. */
  for (guint i = 0; i < 182; i++)
    {
      const DdimTensorInfo *e = ddim_torch_file_get_info_nth (ema, i);
      const DdimTensorInfo *m = ddim_torch_file_lookup (model, e->name);
      g_assert_nonnull (m);
      g_assert_false (g_str_has_prefix (m->name, "module."));
      g_assert_cmpint (e->ndim, ==, m->ndim);
      g_assert_cmpuint (e->n_bytes, ==, m->n_bytes);
      g_assert_true (e->data != m->data);
    }
  const DdimTensorInfo *w = ddim_torch_file_lookup (ema, "temb.dense.0.weight");
  g_assert_nonnull (w);
  g_assert_cmpint (w->ndim, ==, 2);
  g_assert_cmpint (w->shape[0], ==, 128);
  g_assert_cmpint (w->shape[1], ==, 32);
  /* Values read independently with Python's zipfile and pickle. */
  g_assert_cmpfloat (f32_at (w, 0), ==, -0.2127925306558609f);
  g_assert_cmpfloat (f32_at (w, 1), ==, 0.03470320254564285f);
  const DdimTensorInfo *mw = ddim_torch_file_lookup (model, "temb.dense.0.weight");
  guint32 bits;
  memcpy (&bits, mw->data, 4);
  g_assert_cmphex (GUINT32_FROM_LE (bits), ==, 0xbe19369bu);
  g_assert_null (ddim_torch_file_lookup (model, "module.temb.dense.0.weight"));
}

static void
test_fixture_pesser_legacy (void)
{
  FIXTURE_OR_SKIP (path, "torch/ermongroup/pesser-cifar-like/model.ckpt");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimTorchFile) tf = ddim_torch_file_open (path, DDIM_TORCH_SELECT_EMA, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ddim_torch_file_get_format (tf), ==, DDIM_TORCH_FORMAT_LEGACY);
  g_assert_cmpuint (ddim_torch_file_get_n_tensors (tf), ==, 208);
  const DdimTensorInfo *w = ddim_torch_file_get_info_nth (tf, 0);
  g_assert_cmpstr (w->name, ==, "temb.dense.0.weight");
  g_assert_cmpint (w->shape[0], ==, 128);
  g_assert_cmpfloat (f32_at (w, 0), ==, -0.011983908712863922f);
  g_assert_cmpfloat (f32_at (w, 2), ==, 0.04624974727630615f);
  const DdimTensorInfo *b = ddim_torch_file_get_info_nth (tf, 207);
  g_assert_cmpstr (b->name, ==, "conv_out.bias");
  g_assert_cmpfloat (f32_at (b, 0), ==, 0.031005199998617172f);
}

static void
test_fixture_adm_parameters (void)
{
  FIXTURE_OR_SKIP (path, "torch/adm/uncond-256-like/model.pt");
  g_autoptr (GBytes) bytes = map_file (path);
  g_autoptr (DdimTorchFile) tf = load_ok (bytes, DDIM_TORCH_SELECT_EMA);
  g_assert_cmpuint (ddim_torch_file_get_n_tensors (tf), ==, 198);
  g_assert_cmpstr (ddim_torch_file_get_info_nth (tf, 0)->name, ==, "time_embed.0.weight");
  for (guint i = 0; i < 198; i++)
    {
      const DdimTensorInfo *info = ddim_torch_file_get_info_nth (tf, i);
      g_assert_cmpint (info->dtype, ==, DDIM_DTYPE_F32);
      /* contiguous: points into the mapping, no copy */
      g_assert_true (inside (info->data, bytes));
      g_assert_true (inside (info->data + info->n_bytes - 1, bytes));
    }
}

static void
test_fixture_diffusers_bin (void)
{
  FIXTURE_OR_SKIP (bin, "torch/diffusers-bin/tiny-cifar-bin/diffusion_pytorch_model.bin");
  FIXTURE_OR_SKIP (st_path, "diffusers/tiny-cifar/diffusion_pytorch_model.safetensors");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimTorchFile) tf = ddim_torch_file_open (bin, DDIM_TORCH_SELECT_MODEL, &error);
  g_assert_no_error (error);
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (st_path, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_torch_file_get_n_tensors (tf), ==, ddim_safetensors_get_n_tensors (st));
  for (guint i = 0; i < ddim_safetensors_get_n_tensors (st); i++)
    {
      const DdimTensorInfo *s = ddim_safetensors_get_info_nth (st, i);
      const DdimTensorInfo *t = ddim_torch_file_lookup (tf, s->name);
      if (t == NULL)
        g_error ("tensor '%s' missing from the .bin", s->name);
      g_assert_cmpint (t->dtype, ==, s->dtype);
      g_assert_cmpint (t->ndim, ==, s->ndim);
      for (int d = 0; d < s->ndim; d++)
        g_assert_cmpint (t->shape[d], ==, s->shape[d]);
      g_assert_cmpint (t->n_elements, ==, s->n_elements);
      g_assert_cmpuint (t->n_bytes, ==, s->n_bytes);
      g_assert_cmpmem (t->data, t->n_bytes, s->data, s->n_bytes);
    }
}

static void
test_fixture_sniff (void)
{
  FIXTURE_OR_SKIP (zip, "torch/adm/uncond-256-like/model.pt");
  FIXTURE_OR_SKIP (legacy, "torch/ermongroup/pesser-cifar-like/model.ckpt");
  FIXTURE_OR_SKIP (other, "diffusers/tiny-cifar/diffusion_pytorch_model.safetensors");
  g_autoptr (GBytes) a = map_file (zip);
  g_autoptr (GBytes) b = map_file (legacy);
  g_autoptr (GBytes) c = map_file (other);
  g_assert_true (ddim_torch_file_sniff (g_bytes_get_data (a, NULL), 64));
  g_assert_true (ddim_torch_file_sniff (g_bytes_get_data (b, NULL), 64));
  g_assert_false (ddim_torch_file_sniff (g_bytes_get_data (c, NULL), 64));
  g_assert_false (ddim_torch_file_sniff (g_bytes_get_data (b, NULL), 10));
}

/* ---------------------------------------------------- synthetic files */

static void
test_zip_layouts (void)
{
  /* Any archive prefix, with and without ZIP64 and alignment. */
  const char *dirs[] = { "archive/", "", "my model-v2/", "a/b/c/" };
  for (gsize i = 0; i < G_N_ELEMENTS (dirs); i++)
    for (int style = 0; style < 4; style++)
      {
        g_autoptr (GBytes) pkl = two_tensor_pickle ();
        g_autoptr (GBytes) zip = make_torch_zip_in (dirs[i], pkl, 16, 16,
                                                    (ZipStyle) { style & 1, style >> 1 });
        g_autoptr (DdimTorchFile) tf = load_ok (zip, DDIM_TORCH_SELECT_EMA);
        g_assert_cmpuint (ddim_torch_file_get_n_tensors (tf), ==, 2);
        const DdimTensorInfo *a = ddim_torch_file_lookup (tf, "a.weight");
        const DdimTensorInfo *b = ddim_torch_file_lookup (tf, "b.bias");
        g_assert_cmpint (a->shape[0], ==, 2);
        g_assert_cmpint (a->shape[1], ==, 3);
        g_assert_cmpfloat (f32_at (a, 5), ==, 5.0f);
        g_assert_cmpfloat (f32_at (b, 0), ==, 1004.0f);   /* offset 4 into storage 1 */
        g_assert_true (inside (a->data, zip));
        g_assert_true (inside (b->data, zip));
        g_assert_null (ddim_torch_file_lookup (tf, "_metadata"));
      }
}

static void
test_shared_storage_views (void)
{
  /* guided-diffusion fp16 training: all weights are views of one flat
   * storage at increasing offsets; one view transposed (gathered). */
  const TSpec specs[] = {
    { "w1", "FloatStorage", "0", 16, 0, 2, { 2, 2 }, { 2, 1 }, FALSE },
    { "w2", "FloatStorage", "0", 16, 4, 1, { 6 }, { 1 }, FALSE },
    { "w3t", "FloatStorage", "0", 16, 10, 2, { 3, 2 }, { 1, 3 }, FALSE },
    { "s", "FloatStorage", "0", 16, 15, 0, { 0 }, { 0 }, FALSE },
  };
  Pk *pk = pk_new ();
  pk_state_dict (pk, specs, G_N_ELEMENTS (specs), FALSE);
  g_autoptr (GBytes) pkl = pk_finish (pk);
  g_autoptr (GBytes) zip = make_torch_zip (pkl, 16, 4);
  g_autoptr (DdimTorchFile) tf = load_ok (zip, DDIM_TORCH_SELECT_EMA);
  const DdimTensorInfo *w1 = ddim_torch_file_lookup (tf, "w1");
  const DdimTensorInfo *w2 = ddim_torch_file_lookup (tf, "w2");
  const DdimTensorInfo *w3 = ddim_torch_file_lookup (tf, "w3t");
  const DdimTensorInfo *s = ddim_torch_file_lookup (tf, "s");
  g_assert_true (w2->data == w1->data + 16);
  g_assert_cmpfloat (f32_at (w2, 5), ==, 9.0f);
  /* w3t[i][j] = storage[10 + i + 3 j] */
  g_assert_false (inside (w3->data, zip));
  const float want[] = { 10, 13, 11, 14, 12, 15 };
  for (int i = 0; i < 6; i++)
    g_assert_cmpfloat (f32_at (w3, i), ==, want[i]);
  g_assert_cmpint (s->ndim, ==, 0);
  g_assert_cmpint (s->n_elements, ==, 1);
  g_assert_cmpfloat (f32_at (s, 0), ==, 15.0f);
}

static void
test_dtypes (void)
{
  /* F64 is converted to F32, F16/BF16 kept, integer buffers dropped. */
  const TSpec specs[] = {
    { "d", "DoubleStorage", "0", 8, 1, 1, { 3 }, { 1 }, FALSE },
    { "h", "HalfStorage", "1", 32, 2, 1, { 4 }, { 1 }, FALSE },
    { "bf", "BFloat16Storage", "1", 32, 0, 1, { 2 }, { 1 }, FALSE },
    { "steps", "LongStorage", "0", 8, 0, 0, { 0 }, { 0 }, FALSE },
  };
  Pk *pk = pk_new ();
  pk_state_dict (pk, specs, G_N_ELEMENTS (specs), FALSE);
  g_autoptr (GBytes) pkl = pk_finish (pk);
  /* storage 0: 8 doubles = 16 floats of bytes; storage 1: 32 halves = 16 floats */
  Pk *d = g_byte_array_new ();
  for (int i = 0; i < 8; i++)
    {
      double x = 0.5 + i;
      pk_raw (d, &x, 8);
    }
  g_autoptr (GBytes) dbytes = g_byte_array_free_to_bytes (d);
  g_autoptr (GBytes) hbytes = float_bytes (16, 0);
  g_autoptr (GBytes) v = g_bytes_new_static ("3\n", 2);
  ZEntry e[] = { { "x/data.pkl", pkl, 0 }, { "x/data/0", dbytes, 0 }, { "x/data/1", hbytes, 0 },
                 { "x/version", v, 0 } };
  g_autoptr (GBytes) zip = make_zip (e, 4, (ZipStyle) { TRUE, TRUE });
  g_autoptr (DdimTorchFile) tf = load_ok (zip, DDIM_TORCH_SELECT_EMA);
  g_assert_cmpuint (ddim_torch_file_get_n_tensors (tf), ==, 3);
  const DdimTensorInfo *dd = ddim_torch_file_lookup (tf, "d");
  g_assert_cmpint (dd->dtype, ==, DDIM_DTYPE_F32);
  g_assert_cmpuint (dd->n_bytes, ==, 12);
  g_assert_cmpfloat (f32_at (dd, 0), ==, 1.5f);
  g_assert_cmpfloat (f32_at (dd, 2), ==, 3.5f);
  const DdimTensorInfo *h = ddim_torch_file_lookup (tf, "h");
  g_assert_cmpint (h->dtype, ==, DDIM_DTYPE_F16);
  g_assert_cmpuint (h->n_bytes, ==, 8);
  g_assert_true (inside (h->data, zip));
  g_assert_true (h->data == ddim_torch_file_lookup (tf, "bf")->data + 4);
  g_assert_cmpint (ddim_torch_file_lookup (tf, "bf")->dtype, ==, DDIM_DTYPE_BF16);
  g_assert_null (ddim_torch_file_lookup (tf, "steps"));
}

static void
test_select_ermongroup (void)
{
  for (int with_ema = 0; with_ema < 2; with_ema++)
    {
      g_autoptr (GBytes) pkl = ermongroup_list (with_ema);
      g_autoptr (GBytes) zip = make_torch_zip (pkl, 16, 16);
      g_autoptr (DdimTorchFile) e = load_ok (zip, DDIM_TORCH_SELECT_EMA);
      g_autoptr (DdimTorchFile) m = load_ok (zip, DDIM_TORCH_SELECT_MODEL);
      g_assert_cmpfloat (f32_at (ddim_torch_file_lookup (m, "w"), 0), ==, 0.0f);
      /* without an EMA element, EMA selection falls back to the model */
      g_assert_cmpfloat (f32_at (ddim_torch_file_lookup (e, "w"), 0), ==,
                         with_ema ? 1000.0f : 0.0f);
    }
}

/* {outer_key: state dict 0, other_key: state dict 1} */
static GBytes *
keyed_pickle (const char *key0, const char *key1)
{
  const TSpec s0[] = { { "module.w", "FloatStorage", "0", 16, 0, 1, { 4 }, { 1 }, FALSE } };
  const TSpec s1[] = { { "w", "FloatStorage", "1", 16, 0, 1, { 4 }, { 1 }, FALSE } };
  Pk *pk = pk_new ();
  pk_byte (pk, '}');
  pk_byte (pk, '(');
  pk_str (pk, "epoch");
  pk_int (pk, 3);
  pk_str (pk, key0);
  pk_state_dict (pk, s0, 1, FALSE);
  if (key1 != NULL)
    {
      pk_str (pk, key1);
      pk_state_dict (pk, s1, 1, FALSE);
    }
  pk_byte (pk, 'u');
  return pk_finish (pk);
}

static float
first_w (GBytes *pkl, DdimTorchSelect select)
{
  g_autoptr (GBytes) zip = make_torch_zip (pkl, 16, 16);
  g_autoptr (DdimTorchFile) tf = load_ok (zip, select);
  g_assert_cmpuint (ddim_torch_file_get_n_tensors (tf), ==, 1);
  return f32_at (ddim_torch_file_lookup (tf, "w"), 0);
}

static void
test_select_keys (void)
{
  g_autoptr (GBytes) a = keyed_pickle ("state_dict", NULL);
  g_assert_cmpfloat (first_w (a, DDIM_TORCH_SELECT_EMA), ==, 0.0f);
  g_autoptr (GBytes) b = keyed_pickle ("model", "ema");
  g_assert_cmpfloat (first_w (b, DDIM_TORCH_SELECT_EMA), ==, 1000.0f);
  g_assert_cmpfloat (first_w (b, DDIM_TORCH_SELECT_MODEL), ==, 0.0f);
  g_autoptr (GBytes) c = keyed_pickle ("state_dict", "ema");
  g_assert_cmpfloat (first_w (c, DDIM_TORCH_SELECT_MODEL), ==, 0.0f);
  g_autoptr (GBytes) d = keyed_pickle ("optimizer", NULL);
  assert_bad_pickle (d, DDIM_ERROR_FORMAT, "no state dict found");
}

static void
test_select_plain_dict (void)
{
  /* diffusers' plain dict, non-tensor values ignored, a tensor inside the
   * OrderedDict BUILD state never becomes an item. */
  const TSpec t = { "module.conv.weight", "FloatStorage", "0", 16, 0, 1, { 4 }, { 1 }, FALSE };
  const TSpec evil = { "evil", "FloatStorage", "1", 16, 0, 1, { 4 }, { 1 }, FALSE };
  Pk *pk = pk_new ();
  pk_byte (pk, '}');
  pk_byte (pk, '(');
  pk_str (pk, "step");
  pk_int (pk, 9);
  pk_str (pk, "note");
  pk_str (pk, "hello");
  pk_str (pk, "sub");
  pk_global (pk, "collections", "OrderedDict");
  pk_byte (pk, ')');
  pk_byte (pk, 'R');
  pk_byte (pk, '}');
  pk_str (pk, "evil");
  pk_tensor (pk, &evil, FALSE);
  pk_byte (pk, 's');
  pk_byte (pk, 'b');
  pk_str (pk, t.name);
  pk_tensor (pk, &t, FALSE);
  pk_byte (pk, 'u');
  g_autoptr (GBytes) pkl = pk_finish (pk);
  g_autoptr (GBytes) zip = make_torch_zip (pkl, 16, 16);
  g_autoptr (DdimTorchFile) tf = load_ok (zip, DDIM_TORCH_SELECT_MODEL);
  g_assert_cmpuint (ddim_torch_file_get_n_tensors (tf), ==, 1);
  g_assert_nonnull (ddim_torch_file_lookup (tf, "conv.weight"));
  g_assert_null (ddim_torch_file_lookup (tf, "evil"));
}

static void
test_rebuild_variants (void)
{
  /* _rebuild_from_type_v2(_rebuild_tensor_v2, Parameter, args, state),
   * _rebuild_tensor_v3 over an UntypedStorage, STACK_GLOBAL, protocol 4
   * opcodes (FRAME, SHORT_BINUNICODE, MEMOIZE). */
  Pk *pk = g_byte_array_new ();
  pk_byte (pk, 0x80);
  pk_byte (pk, 4);
  pk_byte (pk, 0x95);
  pk_le (pk, 0, 8);
  pk_byte (pk, '}');
  pk_byte (pk, 0x94);
  pk_byte (pk, 0x8c);
  pk_byte (pk, 1);
  pk_raw (pk, "p", 1);
  pk_global (pk, "torch._tensor", "_rebuild_from_type_v2");
  pk_byte (pk, '(');
  pk_global (pk, "torch._utils", "_rebuild_tensor_v2");
  pk_global (pk, "torch.nn.parameter", "Parameter");
  pk_byte (pk, '(');
  pk_pid (pk, "FloatStorage", "0", 16, FALSE);
  pk_int (pk, 2);
  pk_int_tuple (pk, 1, (gint64[]) { 3 });
  pk_int_tuple (pk, 1, (gint64[]) { 1 });
  pk_byte (pk, 0x88);
  pk_global (pk, "collections", "OrderedDict");
  pk_byte (pk, ')');
  pk_byte (pk, 'R');
  pk_byte (pk, 't');
  pk_byte (pk, '}');
  pk_byte (pk, 't');
  pk_byte (pk, 'R');
  pk_byte (pk, 's');
  pk_byte (pk, 0x8c);
  pk_byte (pk, 1);
  pk_raw (pk, "u", 1);
  pk_byte (pk, 0x8c);
  pk_byte (pk, 12);
  pk_raw (pk, "torch._utils", 12);
  pk_byte (pk, 0x8c);
  pk_byte (pk, 18);
  pk_raw (pk, "_rebuild_tensor_v3", 18);
  pk_byte (pk, 0x93);
  pk_byte (pk, '(');
  pk_pid (pk, "UntypedStorage", "1", 64, FALSE);
  pk_int (pk, 1);
  pk_int_tuple (pk, 1, (gint64[]) { 2 });
  pk_int_tuple (pk, 1, (gint64[]) { 1 });
  pk_byte (pk, 0x89);
  pk_byte (pk, '}');
  pk_global (pk, "torch", "float32");
  pk_byte (pk, 't');
  pk_byte (pk, 'R');
  pk_byte (pk, 's');
  g_autoptr (GBytes) pkl = pk_finish (pk);
  g_autoptr (GBytes) zip = make_torch_zip (pkl, 16, 16);
  g_autoptr (DdimTorchFile) tf = load_ok (zip, DDIM_TORCH_SELECT_EMA);
  g_assert_cmpfloat (f32_at (ddim_torch_file_lookup (tf, "p"), 0), ==, 2.0f);
  g_assert_cmpfloat (f32_at (ddim_torch_file_lookup (tf, "u"), 1), ==, 1002.0f);
}

static void
test_legacy_synthetic (void)
{
  const TSpec specs[] = {
    { "module.a", "FloatStorage", "140001", 6, 0, 2, { 2, 3 }, { 3, 1 }, FALSE },
    { "b", "FloatStorage", "140002", 4, 1, 1, { 3 }, { 1 }, FALSE },
  };
  const char *keys[] = { "140001", "140002" };
  const gint64 numels[] = { 6, 4 };
  Pk *pk = pk_new ();
  pk_state_dict (pk, specs, 2, TRUE);
  g_autoptr (GBytes) obj = pk_finish (pk);
  g_autoptr (GBytes) file = make_legacy (obj, keys, 2, numels, 1001);
  g_autoptr (DdimTorchFile) tf = load_ok (file, DDIM_TORCH_SELECT_MODEL);
  g_assert_cmpint (ddim_torch_file_get_format (tf), ==, DDIM_TORCH_FORMAT_LEGACY);
  g_assert_cmpfloat (f32_at (ddim_torch_file_lookup (tf, "a"), 5), ==, 5.0f);
  g_assert_cmpfloat (f32_at (ddim_torch_file_lookup (tf, "b"), 0), ==, 1001.0f);
  g_assert_true (inside (ddim_torch_file_lookup (tf, "b")->data, file));

  /* wrong storage keys, counts, protocol */
  const char *unused[] = { "140001", "140002", "99" };
  const gint64 n3[] = { 6, 4, 1 };
  g_autoptr (GBytes) f1 = make_legacy (obj, unused, 3, n3, 1001);
  assert_bad (f1, DDIM_ERROR_FORMAT, "storage '99' is listed but no tensor uses it");
  const char *missing[] = { "140001" };
  g_autoptr (GBytes) f2 = make_legacy (obj, missing, 1, numels, 1001);
  assert_bad (f2, DDIM_ERROR_FORMAT, "storage '140002' is not in the file's list");
  const char *twice[] = { "140001", "140001", "140002" };
  const gint64 n3b[] = { 6, 6, 4 };
  g_autoptr (GBytes) f3 = make_legacy (obj, twice, 3, n3b, 1001);
  assert_bad (f3, DDIM_ERROR_FORMAT, "listed twice");
  const gint64 wrong[] = { 6, 5 };
  g_autoptr (GBytes) f4 = make_legacy (obj, keys, 2, wrong, 1001);
  assert_bad (f4, DDIM_ERROR_FORMAT, "holds 5 elements, its tensors say 4");
  g_autoptr (GBytes) f5 = make_legacy (obj, keys, 2, numels, 1000);
  assert_bad (f5, DDIM_ERROR_UNSUPPORTED, "protocol version is not 1001");
  /* wrong magic: no longer recognised as a torch file at all */
  gsize n;
  const guint8 *d = g_bytes_get_data (file, &n);
  g_autofree guint8 *bad = g_memdup2 (d, n);
  bad[6] ^= 1;
  g_autoptr (GBytes) f6 = g_bytes_new (bad, n);
  assert_bad (f6, DDIM_ERROR_FORMAT, "not a torch.save file");
  /* a huge element count */
  g_autofree guint8 *huge = g_memdup2 (d, n);
  gsize rec = n - (6 + 4) * 4 - 16;   /* first record's count */
  g_assert_cmpuint (huge[rec], ==, 6);
  memset (huge + rec, 0xff, 7);
  g_autoptr (GBytes) f7 = g_bytes_new (huge, n);
  assert_bad (f7, DDIM_ERROR_FORMAT, "storage '140001' holds");

  /* every cut point */
  for (gsize cut = 0; cut < n; cut++)
    {
      g_autoptr (GBytes) part = g_bytes_new_from_bytes (file, 0, cut);
      assert_bad (part, DDIM_ERROR_FORMAT, cut < 15 ? "not a torch.save file" : "truncated");
    }
}

static void
test_bad_zip (void)
{
  g_autoptr (GBytes) pkl = two_tensor_pickle ();
  for (int zip64 = 0; zip64 < 2; zip64++)
    {
      g_autoptr (GBytes) zip = make_torch_zip_in ("archive/", pkl, 16, 16,
                                                  (ZipStyle) { zip64, TRUE });
      gsize n;
      const guint8 *d = g_bytes_get_data (zip, &n);
      /* truncated at every cut point */
      for (gsize cut = 0; cut < n; cut++)
        {
          g_autoptr (GBytes) part = g_bytes_new_from_bytes (zip, 0, cut);
          assert_bad (part, DDIM_ERROR_FORMAT, cut < 4 ? "not a torch.save file" : "truncated");
        }
      gsize eocd = n - 22;
      guint32 cd_offset = d[eocd + 16] | d[eocd + 17] << 8 | d[eocd + 18] << 16
                          | (guint32) d[eocd + 19] << 24;
      gsize eocd64 = n - 22 - 20 - 56;
      gsize cd = zip64 ? (gsize) (d[eocd64 + 48] | d[eocd64 + 49] << 8) : cd_offset;
      /* central directory offset past the end */
      g_autofree guint8 *a = g_memdup2 (d, n);
      if (zip64)
        a[eocd64 + 52] = 0x7f;
      else
        a[eocd + 19] = 0x7f;
      g_autoptr (GBytes) ba = g_bytes_new (a, n);
      assert_bad (ba, DDIM_ERROR_FORMAT, "lies outside the archive");
      /* broken central header signature */
      g_autofree guint8 *b = g_memdup2 (d, n);
      b[cd + 1] = 'X';
      g_autoptr (GBytes) bb = g_bytes_new (b, n);
      assert_bad (bb, DDIM_ERROR_FORMAT, "is malformed");
      /* huge entry count */
      g_autofree guint8 *c = g_memdup2 (d, n);
      if (zip64)
        c[eocd64 + 32 + 6] = 0x10;
      else
        c[eocd + 10] = 0xff, c[eocd + 11] = 0xff;
      g_autoptr (GBytes) bc = g_bytes_new (c, n);
      assert_bad (bc, DDIM_ERROR_FORMAT, "cannot fit in a central directory");
      /* name length running past the directory */
      g_autofree guint8 *e = g_memdup2 (d, n);
      e[cd + 29] = 0xff;
      g_autoptr (GBytes) be = g_bytes_new (e, n);
      assert_bad (be, DDIM_ERROR_FORMAT, "runs past the directory");
      /* compressed entry */
      g_autofree guint8 *f = g_memdup2 (d, n);
      f[cd + 10] = 8;
      g_autoptr (GBytes) bf = g_bytes_new (f, n);
      assert_bad (bf, DDIM_ERROR_UNSUPPORTED, "is compressed");
      if (zip64)
        {
          /* ZIP64 extra: too short, missing, absurd size / offset */
          g_autofree guint8 *g = g_memdup2 (d, n);
          g[cd + 46 + 16 + 2] = 8;   /* "archive/data.pkl" is 16 bytes */
          g_autoptr (GBytes) bg = g_bytes_new (g, n);
          assert_bad (bg, DDIM_ERROR_FORMAT, "ZIP64 extra field of 8 bytes, needs 24");
          g_autofree guint8 *h = g_memdup2 (d, n);
          h[cd + 46 + 16] = 9;
          g_autoptr (GBytes) bh = g_bytes_new (h, n);
          assert_bad (bh, DDIM_ERROR_FORMAT, "ZIP64 extra field, which is missing");
          g_autofree guint8 *k = g_memdup2 (d, n);
          memset (k + cd + 46 + 16 + 4, 0xff, 16);   /* sizes 2^64-1 */
          g_autoptr (GBytes) bk = g_bytes_new (k, n);
          assert_bad (bk, DDIM_ERROR_FORMAT, "runs past the end of the entries");
          g_autofree guint8 *l = g_memdup2 (d, n);
          memset (l + cd + 46 + 16 + 20, 0xff, 8);    /* local header offset */
          g_autoptr (GBytes) bl = g_bytes_new (l, n);
          assert_bad (bl, DDIM_ERROR_FORMAT, "no local header");
          g_autofree guint8 *m = g_memdup2 (d, n);
          m[n - 22 - 20 + 8] ^= 0x40;                 /* locator -> EOCD64 */
          g_autoptr (GBytes) bm = g_bytes_new (m, n);
          assert_bad (bm, DDIM_ERROR_FORMAT, "ZIP64 end of central directory record missing");
        }
      else
        {
          g_autofree guint8 *l = g_memdup2 (d, n);
          l[cd + 42] = 3;                              /* wrong local header offset */
          g_autoptr (GBytes) bl = g_bytes_new (l, n);
          assert_bad (bl, DDIM_ERROR_FORMAT, "no local header");
        }
    }
}

static void
test_bad_archive_contents (void)
{
  g_autoptr (GBytes) pkl = two_tensor_pickle ();
  g_autoptr (GBytes) v = g_bytes_new_static ("3\n", 2);
  g_autoptr (GBytes) d0 = float_bytes (16, 0);
  g_autoptr (GBytes) d1 = float_bytes (15, 0);
  ZipStyle style = { TRUE, TRUE };
  /* TorchScript */
  ZEntry ts[] = { { "m/data.pkl", pkl, 0 }, { "m/constants.pkl", v, 0 } };
  g_autoptr (GBytes) a = make_zip (ts, 2, style);
  assert_bad (a, DDIM_ERROR_UNSUPPORTED, "TorchScript");
  /* no data.pkl */
  ZEntry none[] = { { "m/other.pkl", pkl, 0 } };
  g_autoptr (GBytes) b = make_zip (none, 1, style);
  assert_bad (b, DDIM_ERROR_FORMAT, "without a data.pkl");
  /* missing storage record, record of the wrong size */
  ZEntry miss[] = { { "m/data.pkl", pkl, 0 }, { "m/data/0", d0, 0 } };
  g_autoptr (GBytes) c = make_zip (miss, 2, style);
  assert_bad (c, DDIM_ERROR_FORMAT, "'m/data/1' is missing from the archive");
  ZEntry shortrec[] = { { "m/data.pkl", pkl, 0 }, { "m/data/0", d0, 0 }, { "m/data/1", d1, 0 } };
  g_autoptr (GBytes) d = make_zip (shortrec, 3, style);
  assert_bad (d, DDIM_ERROR_FORMAT, "storage '1' has 60 bytes, its 16 elements of F32 need 64");
  /* big-endian byteorder record */
  g_autoptr (GBytes) big = g_bytes_new_static ("big", 3);
  ZEntry be[] = { { "m/data.pkl", pkl, 0 }, { "m/data/0", d0, 0 }, { "m/byteorder", big, 0 } };
  g_autoptr (GBytes) e = make_zip (be, 3, style);
  assert_bad (e, DDIM_ERROR_UNSUPPORTED, "byteorder");
  /* not a torch file */
  g_autoptr (GBytes) f = g_bytes_new_static ("hello world, not a checkpoint", 29);
  assert_bad (f, DDIM_ERROR_FORMAT, "not a torch.save file");
  g_autoptr (GBytes) empty = g_bytes_new_static ("", 0);
  assert_bad (empty, DDIM_ERROR_FORMAT, "not a torch.save file");
}

static void
test_pickle_truncated (void)
{
  g_autoptr (GBytes) pkl = ermongroup_list (TRUE);
  gsize n = g_bytes_get_size (pkl);
  for (gsize cut = 0; cut < n; cut++)
    {
      g_autoptr (GBytes) part = g_bytes_new_from_bytes (pkl, 0, cut);
      assert_bad_pickle (part, DDIM_ERROR_FORMAT, "truncated");
    }
}

/* A state dict whose one tensor is @t. */
static GBytes *
one_tensor (const TSpec *t)
{
  Pk *pk = pk_new ();
  pk_state_dict (pk, t, 1, FALSE);
  return pk_finish (pk);
}

static void
test_bad_tensor_views (void)
{
  static const struct {
    TSpec       t;
    gint        code;
    const char *needle;
  } cases[] = {
    { { "x", "FloatStorage", "0", 16, 10, 1, { 7 }, { 1 }, FALSE }, DDIM_ERROR_FORMAT,
      "reaches past the end of storage '0'" },
    { { "x", "FloatStorage", "0", 16, 0, 2, { 4, 5 }, { 4, 1 }, FALSE }, DDIM_ERROR_FORMAT,
      "reaches past the end" },
    { { "x", "FloatStorage", "0", 16, 0, 3, { 1 << 30, 1 << 30, 1 << 30 }, { 0, 0, 0 }, FALSE },
      DDIM_ERROR_FORMAT, "element count overflows" },
    { { "x", "FloatStorage", "0", 16, 0, 2, { 2, 2 }, { G_MAXINT64 / 2, 1 }, FALSE }, DDIM_ERROR_FORMAT,
      "reaches past the end" },
    { { "x", "FloatStorage", "0", 16, 0, 2, { 3, 3 }, { G_MAXINT64, 1 }, FALSE }, DDIM_ERROR_FORMAT,
      "extent overflows" },
    { { "x", "FloatStorage", "0", 16, G_MAXINT64, 1, { 1 }, { 1 }, FALSE }, DDIM_ERROR_FORMAT,
      "reaches past the end" },
    { { "x", "FloatStorage", "0", 16, 0, 1, { -1 }, { 1 }, FALSE }, DDIM_ERROR_FORMAT,
      "negative size or stride" },
    { { "x", "FloatStorage", "0", 16, 0, 1, { 2 }, { -1 }, FALSE }, DDIM_ERROR_FORMAT,
      "negative size or stride" },
    { { "x", "FloatStorage", "0", G_MAXINT64, 0, 1, { 2 }, { 1 }, FALSE }, DDIM_ERROR_FORMAT,
      "bad element count" },
    { { "x", "FloatStorage", "0", 1 << 20, 0, 1, { 2 }, { 1 }, FALSE }, DDIM_ERROR_FORMAT,
      "has 64 bytes, its 1048576 elements of F32 need 4194304" },
    /* stride 0: 2^20 copies of one element, more than the file holds */
    { { "x", "FloatStorage", "0", 16, 0, 2, { 1024, 1024 }, { 0, 0 }, FALSE }, DDIM_ERROR_FORMAT,
      "would need more memory than the file holds" },
    { { "x", "FloatStorage", "a/../../etc", 16, 0, 1, { 1 }, { 1 }, FALSE }, DDIM_ERROR_FORMAT,
      "storage key is not a short name" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GBytes) pkl = one_tensor (&cases[i].t);
      assert_bad_pickle (pkl, cases[i].code, cases[i].needle);
    }
  /* more dimensions than DDIM_MAX_DIMS */
  Pk *pk = pk_new ();
  pk_byte (pk, '}');
  pk_str (pk, "x");
  pk_global (pk, "torch._utils", "_rebuild_tensor_v2");
  pk_byte (pk, '(');
  pk_pid (pk, "FloatStorage", "0", 16, FALSE);
  pk_int (pk, 0);
  gint64 ones[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
  pk_int_tuple (pk, 9, ones);
  pk_int_tuple (pk, 9, ones);
  pk_byte (pk, 0x89);
  pk_byte (pk, 'N');
  pk_byte (pk, 't');
  pk_byte (pk, 'R');
  pk_byte (pk, 's');
  g_autoptr (GBytes) nine = pk_finish (pk);
  assert_bad_pickle (nine, DDIM_ERROR_UNSUPPORTED, "more than 8 dimensions");
  /* a duplicate name after stripping module. */
  const TSpec dup[] = {
    { "module.w", "FloatStorage", "0", 16, 0, 1, { 1 }, { 1 }, FALSE },
    { "w", "FloatStorage", "0", 16, 0, 1, { 1 }, { 1 }, FALSE },
  };
  pk = pk_new ();
  pk_state_dict (pk, dup, 2, FALSE);
  g_autoptr (GBytes) d = pk_finish (pk);
  assert_bad_pickle (d, DDIM_ERROR_FORMAT, "tensor 'w' appears twice");
  /* only integer tensors */
  const TSpec ints[] = { { "n", "LongStorage", "0", 8, 0, 1, { 1 }, { 1 }, FALSE } };
  g_autoptr (GBytes) e = one_tensor (ints);
  assert_bad_pickle (e, DDIM_ERROR_FORMAT, "no floating-point tensors");
}

/* PROTO 2, then @body, then STOP. */
static GBytes *
pickle_of (const char *body, gsize len)
{
  Pk *pk = pk_new ();
  pk_raw (pk, body, len);
  return pk_finish (pk);
}

#define BAD_PICKLE(body, code, needle) \
  do {                                                                  \
    g_autoptr (GBytes) _p = pickle_of (body, sizeof (body) - 1);        \
    assert_bad_pickle (_p, code, needle);                               \
  } while (0)

static void
test_refused_globals (void)
{
  static const char *const refused[][2] = {
    { "os", "system" }, { "posix", "system" }, { "nt", "system" }, { "builtins", "eval" },
    { "builtins", "exec" }, { "builtins", "getattr" }, { "__builtin__", "eval" },
    { "subprocess", "Popen" }, { "subprocess", "check_output" }, { "runpy", "run_path" },
    { "torch", "load" }, { "torch._utils", "_rebuild_qtensor" }, { "collections", "defaultdict" },
    { "torch.serialization", "_get_layout" }, { "numpy.core.multiarray", "_reconstruct" },
    { "torch", "FloatStorage\nos" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (refused); i++)
    {
      g_autofree char *want = g_strdup_printf ("refusing global '%s.%s'", refused[i][0],
                                               refused[i][1]);
      /* after a valid tensor entry, before anything could be called */
      const TSpec t = { "w", "FloatStorage", "0", 16, 0, 1, { 1 }, { 1 }, FALSE };
      Pk *pk = pk_new ();
      pk_byte (pk, '}');
      pk_str (pk, "w");
      pk_tensor (pk, &t, FALSE);
      pk_byte (pk, 's');
      pk_global (pk, refused[i][0], refused[i][1]);
      pk_str (pk, "echo pwned");
      pk_byte (pk, 0x85);
      pk_byte (pk, 'R');
      g_autoptr (GBytes) pkl = pk_finish (pk);
      if (strchr (refused[i][1], '\n') == NULL)
        assert_bad_pickle (pkl, DDIM_ERROR_UNSUPPORTED, want);
      else
        assert_bad_pickle (pkl, DDIM_ERROR_UNSUPPORTED, "opcode 0x6f");   /* the 'o' of "os" */
      /* STACK_GLOBAL (protocol 4) */
      Pk *sg = pk_new ();
      pk_str (sg, refused[i][0]);
      pk_str (sg, refused[i][1]);
      pk_byte (sg, 0x93);
      g_autoptr (GBytes) spkl = pk_finish (sg);
      g_autofree char *escaped = g_strescape (refused[i][1], NULL);
      g_autofree char *want2 = g_strdup_printf ("refusing global '%s.%s'", refused[i][0], escaped);
      assert_bad_pickle (spkl, DDIM_ERROR_UNSUPPORTED, want2);
    }
}

static void
test_bad_pickles (void)
{
  /* stack bombs, memo, opcodes */
  Pk *marks = pk_new ();
  for (int i = 0; i < 5000; i++)
    pk_byte (marks, '(');
  g_autoptr (GBytes) m = pk_finish (marks);
  assert_bad_pickle (m, DDIM_ERROR_FORMAT, "more than 4096 nested MARKs");
  Pk *deep = pk_new ();
  for (int i = 0; i < (1 << 20) + 1; i++)
    pk_byte (deep, 'N');
  g_autoptr (GBytes) dp = pk_finish (deep);
  assert_bad_pickle (dp, DDIM_ERROR_FORMAT, "stack deeper than");
  /* 200000 nested lists: parsed without recursion, then no state dict */
  Pk *nest = pk_new ();
  pk_byte (nest, ']');
  for (int i = 0; i < 200000; i++)
    pk_byte (nest, ']'), pk_byte (nest, 'a');
  g_autoptr (GBytes) ne = pk_finish (nest);
  assert_bad_pickle (ne, DDIM_ERROR_FORMAT, "no state dict found");
  /* a list containing itself */
  BAD_PICKLE ("]q\x00h\x00" "a", DDIM_ERROR_FORMAT, "no state dict found");

  BAD_PICKLE ("h\x05", DDIM_ERROR_FORMAT, "memo index 5 was never stored");
  BAD_PICKLE ("j\xff\xff\xff\x7f", DDIM_ERROR_FORMAT, "was never stored");
  BAD_PICKLE ("Nr\xff\xff\xff\xff", DDIM_ERROR_FORMAT, "memo index 4294967295 out of range");
  BAD_PICKLE ("X\xff\xff\xff\xff" "abc", DDIM_ERROR_FORMAT, "runs past the end");
  BAD_PICKLE ("\x8d\xff\xff\xff\xff\xff\xff\xff\xff", DDIM_ERROR_FORMAT, "runs past the end");
  BAD_PICKLE ("T\xff\xff\xff\xff", DDIM_ERROR_FORMAT, "negative length");
  BAD_PICKLE ("\x8b\x00\x00\x00\x80", DDIM_ERROR_FORMAT, "negative length");
  BAD_PICKLE ("", DDIM_ERROR_FORMAT, "STOP with an empty stack");
  BAD_PICKLE ("t", DDIM_ERROR_FORMAT, "no MARK");
  BAD_PICKLE ("s", DDIM_ERROR_FORMAT, "stack underflow");
  BAD_PICKLE ("(N\x86", DDIM_ERROR_FORMAT, "stack underflow");
  BAD_PICKLE ("]NNs", DDIM_ERROR_FORMAT, "SETITEM on a list");
  BAD_PICKLE ("}(Nu", DDIM_ERROR_FORMAT, "SETITEMS with an odd number");
  BAD_PICKLE ("(NNu", DDIM_ERROR_FORMAT, "SETITEMS without a dict");
  BAD_PICKLE ("}Na", DDIM_ERROR_FORMAT, "APPEND to a dict");
  BAD_PICKLE ("N(Ne", DDIM_ERROR_FORMAT, "APPENDS to a None");
  /* REDUCE of anything unexpected */
  BAD_PICKLE ("ctorch\nFloatStorage\n)R", DDIM_ERROR_UNSUPPORTED,
              "REDUCE of torch.FloatStorage is not allowed");
  BAD_PICKLE ("ctorch\nfloat32\n)R", DDIM_ERROR_UNSUPPORTED, "REDUCE of torch.float32");
  BAD_PICKLE ("X\x01\x00\x00\x00" "a)R", DDIM_ERROR_UNSUPPORTED, "REDUCE of a str");
  BAD_PICKLE ("ccollections\nOrderedDict\n]\x85R", DDIM_ERROR_FORMAT,
              "OrderedDict called with 1 arguments");
  BAD_PICKLE ("ccollections\nOrderedDict\nNR", DDIM_ERROR_FORMAT, "arguments are a None");
  BAD_PICKLE ("ctorch._utils\n_rebuild_tensor_v2\n)R", DDIM_ERROR_FORMAT,
              "takes 6 or 7 arguments, got 0");
  BAD_PICKLE ("ctorch._utils\n_rebuild_parameter\n(NNNtR", DDIM_ERROR_FORMAT,
              "Parameter of a None");
  BAD_PICKLE ("ctorch._utils\n_rebuild_tensor_v2\n(NNNNNNtR", DDIM_ERROR_FORMAT,
              "tensor rebuilt from a None");
  BAD_PICKLE ("ctorch._tensor\n_rebuild_from_type_v2\n(ccollections\nOrderedDict\n"
              "ctorch\nTensor\n)NtR", DDIM_ERROR_UNSUPPORTED, "other than a tensor rebuild");
  BAD_PICKLE ("ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\n"
              "ctorch\nSize\n)NtR", DDIM_ERROR_UNSUPPORTED, "type other than Tensor/Parameter");
  BAD_PICKLE ("ctorch\nTensor\n)\x81", DDIM_ERROR_UNSUPPORTED, "NEWOBJ of something other");
  /* BUILD on the wrong object */
  BAD_PICKLE ("]}b", DDIM_ERROR_FORMAT, "BUILD on a list");
  BAD_PICKLE ("}}b", DDIM_ERROR_FORMAT, "BUILD on a dict");
  /* bad persistent ids */
  BAD_PICKLE ("X\x01\x00\x00\x00" "aQ", DDIM_ERROR_FORMAT, "persistent id is a str");
  BAD_PICKLE ("(X\x03\x00\x00\x00" "footQ", DDIM_ERROR_FORMAT, "not a ('storage', ...) tuple");
  BAD_PICKLE ("(X\x06\x00\x00\x00" "moduletQ", DDIM_ERROR_UNSUPPORTED, "pickled module");
  BAD_PICKLE ("(X\x07\x00\x00\x00" "storageNtQ", DDIM_ERROR_FORMAT, "has 2 items, expected 5");
  BAD_PICKLE ("(X\x07\x00\x00\x00" "storageNNNNtQ", DDIM_ERROR_FORMAT, "no storage type");
  BAD_PICKLE ("(X\x07\x00\x00\x00" "storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0NKdtQ",
              DDIM_ERROR_FORMAT, "storage location is a None");
  BAD_PICKLE ("(X\x07\x00\x00\x00" "storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0"
              "X\x03\x00\x00\x00" "cpuNtQ", DDIM_ERROR_FORMAT, "bad element count");
  /* opcodes state dicts never use */
  BAD_PICKLE ("cos\nsystem\n", DDIM_ERROR_UNSUPPORTED, "refusing global 'os.system'");
  BAD_PICKLE ("(S'ls'\nios\nsystem\n", DDIM_ERROR_UNSUPPORTED, "opcode 0x53");
  BAD_PICKLE ("(io\n", DDIM_ERROR_UNSUPPORTED, "opcode 0x69");
  BAD_PICKLE ("(o", DDIM_ERROR_UNSUPPORTED, "opcode 0x6f");
  BAD_PICKLE ("P0\n", DDIM_ERROR_UNSUPPORTED, "opcode 0x50");
  BAD_PICKLE ("\x82\x01", DDIM_ERROR_UNSUPPORTED, "opcode 0x82");
  BAD_PICKLE ("\x80\x06", DDIM_ERROR_UNSUPPORTED, "pickle protocol 6");
  BAD_PICKLE ("ctorch\nFloat", DDIM_ERROR_FORMAT, "truncated");
}

static void
test_open_errors (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimTorchFile) tf = ddim_torch_file_open ("/nonexistent/model.pt",
                                                       DDIM_TORCH_SELECT_EMA, &error);
  g_assert_null (tf);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  assert_message (error, "model.pt");
  /* messages start with the file's basename */
  g_clear_error (&error);
  g_autofree char *path = NULL;
  int fd = g_file_open_tmp ("torch-XXXXXX.pt", &path, &error);
  g_assert_no_error (error);
  g_assert_true (write (fd, "PK\x03\x04junk", 8) == 8);
  close (fd);
  g_autoptr (DdimTorchFile) tf2 = ddim_torch_file_open (path, DDIM_TORCH_SELECT_EMA, &error);
  g_assert_null (tf2);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_autofree char *base = g_path_get_basename (path);
  g_assert_true (g_str_has_prefix (error->message, base));
  assert_message (error, "no end of central directory");
  g_unlink (path);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/torch-file/fixtures/ermongroup-list", test_fixture_ermongroup_list);
  g_test_add_func ("/torch-file/fixtures/pesser-legacy", test_fixture_pesser_legacy);
  g_test_add_func ("/torch-file/fixtures/adm-parameters", test_fixture_adm_parameters);
  g_test_add_func ("/torch-file/fixtures/diffusers-bin", test_fixture_diffusers_bin);
  g_test_add_func ("/torch-file/fixtures/sniff", test_fixture_sniff);
  g_test_add_func ("/torch-file/zip/layouts", test_zip_layouts);
  g_test_add_func ("/torch-file/views/shared-storage", test_shared_storage_views);
  g_test_add_func ("/torch-file/views/dtypes", test_dtypes);
  g_test_add_func ("/torch-file/views/rebuild-variants", test_rebuild_variants);
  g_test_add_func ("/torch-file/select/ermongroup", test_select_ermongroup);
  g_test_add_func ("/torch-file/select/keys", test_select_keys);
  g_test_add_func ("/torch-file/select/plain-dict", test_select_plain_dict);
  g_test_add_func ("/torch-file/legacy/synthetic", test_legacy_synthetic);
  g_test_add_func ("/torch-file/bad/zip", test_bad_zip);
  g_test_add_func ("/torch-file/bad/archive-contents", test_bad_archive_contents);
  g_test_add_func ("/torch-file/bad/pickle-truncated", test_pickle_truncated);
  g_test_add_func ("/torch-file/bad/tensor-views", test_bad_tensor_views);
  g_test_add_func ("/torch-file/bad/refused-globals", test_refused_globals);
  g_test_add_func ("/torch-file/bad/pickles", test_bad_pickles);
  g_test_add_func ("/torch-file/bad/open", test_open_errors);
  return g_test_run ();
}
