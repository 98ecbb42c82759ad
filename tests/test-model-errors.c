/* Bad model folders, configs, sizes and latents: each a GError with a
 * specific message, never a crash. Also the old attention key names. */
#include <glib/gstdio.h>
#include <string.h>

#include "ddim/ddim.h"

typedef struct {
  char     *dir;          /* temporary model folder */
  DdimModel *reference;   /* tiny-cifar as shipped */
} Ctx;

static char *
fixture_model (void)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  return root ? g_build_filename (root, "diffusers", "tiny-cifar", NULL) : NULL;
}

static void
ctx_setup (Ctx *ctx, gconstpointer data)
{
  (void) data;
  g_autofree char *src = fixture_model ();
  ctx->dir = g_dir_make_tmp ("ddim-model-XXXXXX", NULL);
  g_assert_nonnull (ctx->dir);
  ctx->reference = NULL;
  if (src == NULL)
    return;
  g_autoptr (GError) error = NULL;
  ctx->reference = ddim_model_load (src, &error);
  g_assert_no_error (error);
}

static void
rm_rf (const char *path)
{
  if (g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      g_autoptr (GDir) d = g_dir_open (path, 0, NULL);
      const char *name;
      while (d && (name = g_dir_read_name (d)))
        {
          g_autofree char *child = g_build_filename (path, name, NULL);
          rm_rf (child);
        }
      g_rmdir (path);
    }
  else
    g_unlink (path);
}

static void
ctx_teardown (Ctx *ctx, gconstpointer data)
{
  (void) data;
  rm_rf (ctx->dir);
  g_free (ctx->dir);
  ddim_model_free (ctx->reference);
}

static void
write_file (const char *dir, const char *name, const void *data, gsize len)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (g_file_set_contents (path, data, (gssize) len, &error));
}

static char *
reference_config (void)
{
  g_autofree char *src = fixture_model ();
  g_autofree char *path = g_build_filename (src, "config.json", NULL);
  char *contents = NULL;
  g_assert_true (g_file_get_contents (path, &contents, NULL, NULL));
  return contents;
}

/* Writes config.json (the reference one with @from replaced by @to) and
 * the reference weights, with @drop left out, @rename stored as @rename_to,
 * and @reshape stored with a wrong first dimension. */
static void
write_model (Ctx *ctx, const char *from, const char *to, const char *drop,
             const char *reshape, gboolean old_names)
{
  g_autofree char *config = reference_config ();
  if (from)
    {
      g_assert_nonnull (strstr (config, from));
      g_auto (GStrv) parts = g_strsplit (config, from, 2);
      g_free (config);
      config = g_strjoin (to, parts[0], parts[1], NULL);
    }
  write_file (ctx->dir, "config.json", config, strlen (config));

  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  DdimUNet *u = ctx->reference->unet;
  for (guint i = 0; i < ddim_unet_get_n_tensors (u); i++)
    {
      int ndim;
      gint64 shape[4];
      float *data;
      const char *name = ddim_unet_get_tensor (u, i, &ndim, shape, &data);
      if (drop && g_str_equal (name, drop))
        continue;
      g_autofree char *stored = g_strdup (name);
      if (old_names)
        {
          static const char *map[][2] = { { ".to_q.", ".query." }, { ".to_k.", ".key." },
                                          { ".to_v.", ".value." }, { ".to_out.0.", ".proj_attn." } };
          for (guint k = 0; k < G_N_ELEMENTS (map); k++)
            if (strstr (name, map[k][0]))
              {
                g_auto (GStrv) parts = g_strsplit (name, map[k][0], 2);
                g_free (stored);
                stored = g_strjoin (map[k][1], parts[0], parts[1], NULL);
              }
        }
      if (reshape && g_str_equal (name, reshape))
        {
          /* Same number of elements, other shape: [a, b, ...] -> [b, a, ...]. */
          gint64 t = shape[0];
          shape[0] = shape[1];
          shape[1] = t;
        }
      ddim_safetensors_writer_add_f32 (w, stored, ndim, shape, data);
    }
  g_autofree char *wpath = g_build_filename (ctx->dir, "diffusion_pytorch_model.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_safetensors_writer_save (w, wpath, &error));
}

static void
expect_load_error (Ctx *ctx, int code, const char *substring)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimModel) m = ddim_model_load (ctx->dir, &error);
  g_assert_null (m);
  g_assert_error (error, DDIM_ERROR, code);
  if (strstr (error->message, substring) == NULL)
    g_error ("message '%s' lacks '%s'", error->message, substring);
}

#define NEED_FIXTURES()                                     \
  if (ctx->reference == NULL)                               \
    {                                                       \
      g_test_skip ("DDIM_FIXTURES_DIR not set");            \
      return;                                               \
    }

static void
test_roundtrip_ok (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  write_model (ctx, NULL, NULL, NULL, NULL, FALSE);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimModel) m = ddim_model_load (ctx->dir, &error);
  g_assert_no_error (error);
  /* No scheduler config in the folder: DDPM defaults. */
  g_assert_false (m->has_scheduler_config);
  g_assert_cmpstr (m->weights_dtype, ==, "F32");
}

static void
test_old_attention_names (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  write_model (ctx, NULL, NULL, NULL, NULL, TRUE);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimModel) m = ddim_model_load (ctx->dir, &error);
  g_assert_no_error (error);
  float x[3 * 16 * 16], a[3 * 16 * 16], b[3 * 16 * 16], t = 321;
  ddim_randn (7, x, G_N_ELEMENTS (x));
  g_assert_true (ddim_unet_forward (m->unet, x, 1, 16, 16, &t, a, &error));
  g_assert_true (ddim_unet_forward (ctx->reference->unet, x, 1, 16, 16, &t, b, &error));
  g_assert_cmpmem (a, sizeof a, b, sizeof b);
}

static void
test_missing_tensor (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  write_model (ctx, NULL, NULL, "mid_block.attentions.0.to_q.weight", NULL, FALSE);
  expect_load_error (ctx, DDIM_ERROR_MISMATCH, "missing tensor 'mid_block.attentions.0.to_q.weight'");
}

static void
test_wrong_shape (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  write_model (ctx, NULL, NULL, NULL, "conv_in.weight", FALSE);
  expect_load_error (ctx, DDIM_ERROR_MISMATCH,
                     "tensor 'conv_in.weight' has shape [3, 32, 3, 3], config.json implies [32, 3, 3, 3]");
}

static void
test_config_mismatch (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  /* Weights of one config with another config: a shape error, not a crash. */
  write_model (ctx, "\"layers_per_block\": 2", "\"layers_per_block\": 3", NULL, NULL, FALSE);
  expect_load_error (ctx, DDIM_ERROR_MISMATCH, "missing tensor 'down_blocks.0.resnets.2.norm1.weight'");
}

static void
test_unsupported_block (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  write_model (ctx, "\"AttnDownBlock2D\"", "\"CrossAttnDownBlock2D\"", NULL, NULL, FALSE);
  expect_load_error (ctx, DDIM_ERROR_UNSUPPORTED, "block type 'CrossAttnDownBlock2D' is not supported");
}

static void
test_unsupported_fields (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  static const char *cases[][3] = {
    { "\"time_embedding_type\": \"positional\"", "\"time_embedding_type\": \"fourier\"",
      "time_embedding_type 'fourier' is not supported" },
    { "\"resnet_time_scale_shift\": \"default\"", "\"resnet_time_scale_shift\": \"spatial\"",
      "resnet_time_scale_shift 'spatial' is not supported" },
    { "\"act_fn\": \"silu\"", "\"act_fn\": \"gelu\"", "act_fn 'gelu' is not supported" },
    { "\"downsample_padding\": 0", "\"downsample_padding\": 2", "downsample_padding 2 is not supported" },
    { "\"norm_num_groups\": 8", "\"norm_num_groups\": 5", "norm_num_groups 5 does not divide" },
    { "\"attention_head_dim\": null", "\"attention_head_dim\": 24", "attention_head_dim 24 does not divide" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      write_model (ctx, cases[i][0], cases[i][1], NULL, NULL, FALSE);
      expect_load_error (ctx, DDIM_ERROR_UNSUPPORTED, cases[i][2]);
    }
}

static void
test_malformed_json (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  write_model (ctx, "\"sample_size\": 16,", "\"sample_size\": 16", NULL, NULL, FALSE);
  expect_load_error (ctx, DDIM_ERROR_FORMAT, "config.json is not valid JSON");
  write_model (ctx, "\"sample_size\": 16,", "\"sample_size\": \"big\",", NULL, NULL, FALSE);
  expect_load_error (ctx, DDIM_ERROR_FORMAT, "field 'sample_size' must be a number");
  write_file (ctx->dir, "scheduler_config.json", "{\"beta_schedule\": 3", 19);
  write_model (ctx, NULL, NULL, NULL, NULL, FALSE);
  expect_load_error (ctx, DDIM_ERROR_FORMAT, "scheduler config is not valid JSON");
  write_file (ctx->dir, "scheduler_config.json", "{\"beta_schedule\": \"sigmoid\"}", 28);
  expect_load_error (ctx, DDIM_ERROR_UNSUPPORTED, "beta_schedule 'sigmoid' is not supported");
}

static void
test_truncated_weights (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  write_model (ctx, NULL, NULL, NULL, NULL, FALSE);
  g_autofree char *wpath = g_build_filename (ctx->dir, "diffusion_pytorch_model.safetensors", NULL);
  g_autofree char *data = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (wpath, &data, &len, NULL));
  write_file (ctx->dir, "diffusion_pytorch_model.safetensors", data, len - 100);
  expect_load_error (ctx, DDIM_ERROR_FORMAT, "diffusion_pytorch_model.safetensors: tensor");
  /* Header length past the end of the file. */
  guint64 huge = GUINT64_TO_LE ((guint64) len * 2);
  memcpy (data, &huge, 8);
  write_file (ctx->dir, "diffusion_pytorch_model.safetensors", data, len);
  expect_load_error (ctx, DDIM_ERROR_FORMAT, "past the end of the file");
}

static void
test_raw_weights (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  write_model (ctx, NULL, NULL, NULL, NULL, FALSE);
  /* Hand-made headers: overlap, unknown dtype. */
  static const char *headers[][2] = {
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", "overlap" },
    { "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", "unknown dtype 'F8_E4M3'" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (headers); i++)
    {
      gsize hl = strlen (headers[i][0]);
      g_autofree guint8 *buf = g_malloc0 (8 + hl + 12);
      guint64 le = GUINT64_TO_LE ((guint64) hl);
      memcpy (buf, &le, 8);
      memcpy (buf + 8, headers[i][0], hl);
      write_file (ctx->dir, "diffusion_pytorch_model.safetensors", buf, 8 + hl + 12);
      g_autoptr (GError) error = NULL;
      g_autoptr (DdimModel) m = ddim_model_load (ctx->dir, &error);
      g_assert_null (m);
      g_assert_nonnull (error);
      if (strstr (error->message, headers[i][1]) == NULL)
        g_error ("message '%s' lacks '%s'", error->message, headers[i][1]);
    }
}

static void
test_missing_folder (Ctx *ctx, gconstpointer d)
{
  (void) d;
  g_autofree char *missing = g_build_filename (ctx->dir, "nope", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimModel) m = ddim_model_load (missing, &error);
  g_assert_null (m);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "does not exist"));
}

static void
test_bad_size (Ctx *ctx, gconstpointer d)
{
  (void) d;
  NEED_FIXTURES ();
  float x[3 * 18 * 18], out[3 * 18 * 18], t = 10;
  memset (x, 0, sizeof x);
  g_autoptr (GError) error = NULL;
  g_assert_false (ddim_unet_forward (ctx->reference->unet, x, 1, 18, 18, &t, out, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "image size 18x18 is not supported by this model: "
                                             "width and height must be positive multiples of 4"));
  /* Non-square sizes that are multiples work (fully convolutional). */
  g_clear_error (&error);
  g_assert_true (ddim_unet_forward (ctx->reference->unet, x, 1, 8, 12, &t, out, &error));
  g_assert_no_error (error);
}

static void
test_latent_other_model (Ctx *ctx, gconstpointer d)
{
  (void) d;
  g_autoptr (DdimLatent) l = ddim_latent_new (3, 4, 4);
  l->model_sha256 = g_strdup ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  l->steps = 10;
  g_autofree char *path = g_build_filename (ctx->dir, "latent.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_latent_save (l, path, &error));
  g_autoptr (DdimLatent) ok = ddim_latent_load (path, l->model_sha256, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ok->steps, ==, 10);
  g_autoptr (DdimLatent) bad = ddim_latent_load (path, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", &error);
  g_assert_null (bad);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_assert_nonnull (strstr (error->message, "made with another model"));

  /* A newer format. */
  g_clear_error (&error);
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  gint64 shape[4] = { 1, 3, 4, 4 };
  ddim_safetensors_writer_add_metadata (w, "format", "ddim-latent/2");
  ddim_safetensors_writer_add_f32 (w, "latent", 4, shape, l->latent);
  g_autoptr (GBytes) bytes = ddim_safetensors_writer_to_bytes (w);
  g_autoptr (DdimLatent) newer = ddim_latent_new_from_bytes (bytes, NULL, &error);
  g_assert_null (newer);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (error->message, "newer version"));

  /* Not a latent at all. */
  g_clear_error (&error);
  g_autoptr (GBytes) junk = g_bytes_new_static ("hello", 5);
  g_autoptr (DdimLatent) none = ddim_latent_new_from_bytes (junk, NULL, &error);
  g_assert_null (none);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(path, fn) g_test_add (path, Ctx, NULL, ctx_setup, fn, ctx_teardown)
  ADD ("/model/roundtrip", test_roundtrip_ok);
  ADD ("/model/old-attention-names", test_old_attention_names);
  ADD ("/model/missing-tensor", test_missing_tensor);
  ADD ("/model/wrong-shape", test_wrong_shape);
  ADD ("/model/config-weights-mismatch", test_config_mismatch);
  ADD ("/model/unsupported-block-type", test_unsupported_block);
  ADD ("/model/unsupported-fields", test_unsupported_fields);
  ADD ("/model/malformed-json", test_malformed_json);
  ADD ("/model/truncated-weights", test_truncated_weights);
  ADD ("/model/bad-weights-header", test_raw_weights);
  ADD ("/model/missing-folder", test_missing_folder);
  ADD ("/model/bad-image-size", test_bad_size);
  ADD ("/latent/other-model-and-format", test_latent_other_model);
  return g_test_run ();
}
