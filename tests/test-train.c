/* Training (ddim/train.h, ddim/dataset.h) on a tiny UNet2DModel: the loss
 * goes down on Fashion-MNIST, a saved model folder loads back and gives the
 * EMA model's outputs bit for bit, a resumed run equals an uninterrupted
 * one, v-prediction trains, the model folder has diffusers' layout, and bad
 * input (missing, corrupt or truncated data files, a checkpoint of another
 * config, an unwritable output folder) fails with clear errors and leaves
 * nothing behind.
 *
 * DDIM_TEST_TRAIN_STEPS overrides the 300 steps of the loss test (the
 * sanitizer build, detected at compile time, uses 60: it is ~10x slower).
 * DDIM_TEST_TRAIN_VERBOSE=1 prints the measured throughput. */
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ddim/ddim.h"

#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_STEPS 60
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DEFAULT_STEPS 60
#endif
#endif
#ifndef DEFAULT_STEPS
#define DEFAULT_STEPS 300
#endif

#define N_IMAGES 64
#define SIZE 16

static const char tiny_config[] =
  "{\n"
  "  \"_class_name\": \"UNet2DModel\",\n"
  "  \"sample_size\": 16,\n"
  "  \"in_channels\": 1,\n"
  "  \"out_channels\": 1,\n"
  "  \"block_out_channels\": [16, 32],\n"
  "  \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],\n"
  "  \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],\n"
  "  \"layers_per_block\": 1,\n"
  "  \"norm_num_groups\": 8,\n"
  "  \"attention_head_dim\": 8\n"
  "}\n";

/* ---- helpers ---- */

static void
rm_rf (const char *path)
{
  if (g_file_test (path, G_FILE_TEST_IS_DIR) && !g_file_test (path, G_FILE_TEST_IS_SYMLINK))
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

typedef struct {
  char          *dir;       /* scratch folder */
  DdimUNetConfig config;
  DdimSchedule  *schedule;
} Ctx;

static void
ctx_setup (Ctx *ctx, gconstpointer data)
{
  (void) data;
  ctx->dir = g_dir_make_tmp ("ddim-train-XXXXXX", NULL);
  g_assert_nonnull (ctx->dir);
  g_autofree char *cfg = g_build_filename (ctx->dir, "config.json", NULL);
  g_assert_true (g_file_set_contents (cfg, tiny_config, -1, NULL));
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_config_load (cfg, &ctx->config, &error));
  g_assert_no_error (error);
  g_unlink (cfg);
  ctx->schedule = ddim_schedule_new_default ();
}

static void
ctx_teardown (Ctx *ctx, gconstpointer data)
{
  (void) data;
  rm_rf (ctx->dir);
  g_free (ctx->dir);
  ddim_schedule_free (ctx->schedule);
}

static char *
path_in (Ctx *ctx, const char *name)
{
  return g_build_filename (ctx->dir, name, NULL);
}

/* Names in @dir starting with '.', joined (NULL when there are none). */
static char *
hidden_entries (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  g_assert_nonnull (d);
  g_autoptr (GString) s = g_string_new (NULL);
  const char *name;
  while ((name = g_dir_read_name (d)))
    if (name[0] == '.')
      g_string_append_printf (s, "%s ", name);
  return s->len ? g_strdup (s->str) : NULL;
}

static DdimDataset *
load_fashion (int max_items)
{
  const char *dir = ddim_dataset_default_fashion_mnist_dir ();
  g_autofree char *images = g_build_filename (dir, "train-images-idx3-ubyte.gz", NULL);
  if (!g_file_test (images, G_FILE_TEST_EXISTS))
    {
      g_test_skip ("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)");
      return NULL;
    }
  g_autoptr (GError) error = NULL;
  DdimDataset *ds = ddim_dataset_load_fashion_mnist (NULL, "train", SIZE, 1, max_items, &error);
  g_assert_no_error (error);
  g_assert_nonnull (ds);
  return ds;
}

static void
small_options (DdimTrainOptions *o)
{
  ddim_train_options_init (o);
  o->batch_size = 8;
  o->steps = 300;
  o->lr = 1e-3;
  o->warmup_steps = 20;
  o->ema_decay = 0.995;
  o->seed = 7;
}

static void
record_loss (int step, int total, double loss, gpointer data)
{
  (void) total;
  GArray *losses = data;
  g_assert_cmpint (step, ==, (int) losses->len + 1);
  g_array_append_val (losses, loss);
}

/* Writes an IDX file (gzip-compressed when @path ends in .gz). */
static void
write_idx (const char *path, const guint8 *data, gsize len)
{
  g_autoptr (GFile) file = g_file_new_for_path (path);
  g_autoptr (GError) error = NULL;
  g_autoptr (GFileOutputStream) fout =
    g_file_replace (file, NULL, FALSE, G_FILE_CREATE_NONE, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (GOutputStream) out = NULL;
  if (g_str_has_suffix (path, ".gz"))
    {
      g_autoptr (GZlibCompressor) comp =
        g_zlib_compressor_new (G_ZLIB_COMPRESSOR_FORMAT_GZIP, -1);
      out = g_converter_output_stream_new (G_OUTPUT_STREAM (fout), G_CONVERTER (comp));
    }
  else
    out = g_object_ref (G_OUTPUT_STREAM (fout));
  g_assert_true (g_output_stream_write_all (out, data, len, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_output_stream_close (out, NULL, &error));
  g_assert_no_error (error);
}

static void
put_be32 (guint8 *p, guint32 v)
{
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

/* An IDX image file: a header declaring @declared images of rows x cols,
 * then @present images whose pixel i of image k is (k * 7 + i) % 256. */
static guint8 *
make_idx_images (guint32 declared, guint32 present, guint32 rows, guint32 cols, gsize *len)
{
  *len = 16 + (gsize) present * rows * cols;
  guint8 *b = g_malloc (*len);
  put_be32 (b, 0x803);
  put_be32 (b + 4, declared);
  put_be32 (b + 8, rows);
  put_be32 (b + 12, cols);
  for (gsize k = 0; k < present; k++)
    for (gsize i = 0; i < (gsize) rows * cols; i++)
      b[16 + k * rows * cols + i] = (guint8) ((k * 7 + i) % 256);
  return b;
}

/* ---- datasets ---- */

static void
test_dataset_idx (Ctx *ctx, gconstpointer data)
{
  (void) data;
  gsize len;
  g_autofree guint8 *img = make_idx_images (3, 3, 28, 28, &len);
  g_autofree char *ipath = path_in (ctx, "img-idx3-ubyte.gz");
  write_idx (ipath, img, len);
  guint8 lab[8 + 3];
  put_be32 (lab, 0x801);
  put_be32 (lab + 4, 3);
  lab[8] = 4, lab[9] = 0, lab[10] = 9;
  g_autofree char *lpath = path_in (ctx, "lab-idx1-ubyte");
  write_idx (lpath, lab, sizeof lab);
  g_autoptr (GError) error = NULL;

  /* Padding 28 -> 32: 2 pixels of -1 on every side, pixels exact. */
  g_autoptr (DdimDataset) pad = ddim_dataset_load_idx (ipath, lpath, 32, 3, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (pad->n, ==, 3);
  g_assert_cmpint (pad->channels, ==, 3);
  g_assert_nonnull (pad->labels);
  g_assert_cmpint (pad->labels[2], ==, 9);
  const float *im1 = ddim_dataset_get_image (pad, 1);
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < 32; y++)
      for (int x = 0; x < 32; x++)
        {
          float v = im1[(c * 32 + y) * 32 + x];
          if (y < 2 || y >= 30 || x < 2 || x >= 30)
            g_assert_cmpfloat (v, ==, -1.f);
          else
            g_assert_cmpfloat (v, ==, ((7 + (y - 2) * 28 + (x - 2)) % 256) / 127.5f - 1.f);
        }

  /* Area downscale 28 -> 14: each output is the mean of a 2x2 block. */
  g_autoptr (DdimDataset) small = ddim_dataset_load_idx (ipath, NULL, 14, 1, 2, &error);
  g_assert_no_error (error);
  g_assert_cmpint (small->n, ==, 2);
  g_assert_null (small->labels);
  const float *s0 = ddim_dataset_get_image (small, 0);
  for (int y = 0; y < 14; y++)
    for (int x = 0; x < 14; x++)
      {
        double mean = 0;
        for (int dy = 0; dy < 2; dy++)
          for (int dx = 0; dx < 2; dx++)
            mean += (((2 * y + dy) * 28 + 2 * x + dx) % 256) / 127.5 - 1.0;
        g_assert_cmpfloat_with_epsilon (s0[y * 14 + x], mean / 4, 1e-5);
      }

  /* Labels of another count. */
  put_be32 (lab + 4, 2);
  write_idx (lpath, lab, sizeof lab - 1);
  g_autoptr (DdimDataset) bad = ddim_dataset_load_idx (ipath, lpath, 28, 1, 0, &error);
  g_assert_null (bad);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_assert_nonnull (strstr (error->message, "3 images"));
}

static void
test_dataset_fashion (Ctx *ctx, gconstpointer data)
{
  (void) ctx;
  (void) data;
  g_autoptr (DdimDataset) ds = load_fashion (10);
  if (ds == NULL)
    return;
  g_assert_cmpint (ds->n, ==, 10);
  g_assert_cmpint (ds->size, ==, SIZE);
  g_assert_nonnull (ds->labels);
  /* The first training item of Fashion-MNIST is an ankle boot (9). */
  g_assert_cmpint (ds->labels[0], ==, 9);
  float lo = 1, hi = -1;
  for (gsize i = 0; i < (gsize) ds->n * SIZE * SIZE; i++)
    lo = MIN (lo, ds->images[i]), hi = MAX (hi, ds->images[i]);
  g_assert_cmpfloat (lo, >=, -1.f);
  g_assert_cmpfloat (hi, <=, 1.f);
  g_assert_cmpfloat (hi, >, 0.f);

  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDataset) test = ddim_dataset_load_fashion_mnist (NULL, "test", 32, 1, 3,
                                                                  &error);
  g_assert_no_error (error);
  g_assert_cmpint (test->n, ==, 3);
  g_autoptr (DdimDataset) none = ddim_dataset_load_fashion_mnist (NULL, "validation", 32, 1, 3,
                                                                  &error);
  g_assert_null (none);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
}

static void
test_dataset_folder (Ctx *ctx, gconstpointer data)
{
  (void) data;
  g_autofree char *dir = path_in (ctx, "images");
  g_assert_cmpint (g_mkdir (dir, 0755), ==, 0);
  g_autoptr (GError) error = NULL;
  for (int i = 0; i < 3; i++)
    {
      float px[4 * 4];
      for (int j = 0; j < 16; j++)
        px[j] = (float) (i - 1);   /* -1, 0 -> 0.0039, 1 */
      g_autofree char *name = g_strdup_printf ("img%d.png", 2 - i);
      g_autofree char *p = g_build_filename (dir, name, NULL);
      g_assert_true (ddim_image_save_png (p, 1, 4, 4, px, &error));
      g_assert_no_error (error);
    }
  g_autofree char *hidden = g_build_filename (dir, ".hidden", NULL);
  g_assert_true (g_file_set_contents (hidden, "x", -1, NULL));
  g_autofree char *notes = g_build_filename (dir, "notes.txt", NULL);
  g_assert_true (g_file_set_contents (notes, "not an image", -1, NULL));

  g_autoptr (DdimDataset) bad = ddim_dataset_load_folder (dir, 4, 1, 0, &error);
  g_assert_null (bad);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, "notes.txt"));
  g_clear_error (&error);
  g_unlink (notes);

  g_autoptr (DdimDataset) ds = ddim_dataset_load_folder (dir, 4, 3, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ds->n, ==, 3);
  /* Sorted: img0 (saved from +1), img1 (0), img2 (-1). */
  g_assert_cmpfloat (ds->images[0], ==, 1.f);
  g_assert_cmpfloat (ddim_dataset_get_image (ds, 2)[47], ==, -1.f);
}

/* ---- training ---- */

static void
test_train_loss (Ctx *ctx, gconstpointer data)
{
  (void) data;
  g_autoptr (DdimDataset) ds = load_fashion (N_IMAGES);
  if (ds == NULL)
    return;
  int steps = DEFAULT_STEPS;
  const char *env = g_getenv ("DDIM_TEST_TRAIN_STEPS");
  if (env && atoi (env) >= 30)
    steps = atoi (env);
  int window = steps / 6;

  g_autoptr (GArray) losses = g_array_new (FALSE, FALSE, sizeof (double));
  g_autofree char *csv = path_in (ctx, "loss.csv");
  DdimTrainOptions o;
  small_options (&o);
  o.steps = steps;
  o.loss_csv_path = csv;
  o.progress = record_loss;
  o.progress_data = losses;
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimTrainer) tr = ddim_trainer_new (&ctx->config, ctx->schedule, &o, &error);
  g_assert_no_error (error);
  gint64 t0 = g_get_monotonic_time ();
  g_assert_true (ddim_trainer_run (tr, ds, steps, &error));
  g_assert_no_error (error);
  double seconds = (g_get_monotonic_time () - t0) / 1e6;
  if (g_getenv ("DDIM_TEST_TRAIN_VERBOSE"))
    g_printerr ("train: %d steps of %d images in %.1f s: %.1f samples/s (%zu parameters)\n",
                steps, o.batch_size, seconds, steps * o.batch_size / seconds,
                ddim_unet_get_n_params (ddim_trainer_get_unet (tr)));
  g_assert_cmpint (ddim_trainer_get_step (tr), ==, steps);
  g_assert_cmpuint (losses->len, ==, (guint) steps);

  double first = 0, last = 0;
  for (int i = 0; i < window; i++)
    {
      first += g_array_index (losses, double, i);
      last += g_array_index (losses, double, steps - 1 - i);
    }
  first /= window;
  last /= window;
  g_test_message ("mean loss: first %d steps %.4f, last %d steps %.4f", window, first, window,
                  last);
  g_assert_cmpfloat (last, <, 0.8 * first);

  /* The CSV: a header and one row per step. */
  g_autofree char *contents = NULL;
  g_assert_true (g_file_get_contents (csv, &contents, NULL, NULL));
  g_auto (GStrv) lines = g_strsplit (contents, "\n", -1);
  g_assert_cmpstr (lines[0], ==, "step,loss,lr,grad_norm,seconds");
  g_assert_cmpuint (g_strv_length (lines), ==, (guint) steps + 2);
  g_assert_true (g_str_has_prefix (lines[steps], "300,") || steps != 300);

  /* Save (EMA, F32), load with ddim_model_load, same outputs bit for bit. */
  g_autofree char *out = path_in (ctx, "model");
  g_assert_true (ddim_trainer_save_model (tr, out, TRUE, FALSE, &error));
  g_assert_no_error (error);
  g_autoptr (DdimModel) model = ddim_model_load (out, &error);
  g_assert_no_error (error);
  g_assert_true (model->has_scheduler_config);
  g_assert_cmpstr (model->weights_dtype, ==, "F32");
  int n = 4;
  gsize count = (gsize) n * SIZE * SIZE;
  g_autofree float *x = g_new (float, count);
  g_autofree float *y1 = g_new (float, count);
  g_autofree float *y2 = g_new (float, count);
  float t[4] = { 0, 250, 500, 999 };
  ddim_randn (3, x, count);
  g_assert_true (ddim_unet_forward (model->unet, x, n, SIZE, SIZE, t, y1, &error));
  g_assert_true (ddim_unet_forward (ddim_trainer_get_ema_unet (tr), x, n, SIZE, SIZE, t, y2,
                                    &error));
  g_assert_no_error (error);
  g_assert_cmpmem (y1, count * sizeof (float), y2, count * sizeof (float));

  /* Sampling from the saved model runs and stays finite. */
  DdimRunOptions ro;
  ddim_run_options_init (&ro, model->schedule);
  ro.steps = 5;
  g_assert_true (ddim_sample (model->unet, model->schedule, x, n, SIZE, SIZE, &ro, &error));
  g_assert_no_error (error);
  for (gsize i = 0; i < count; i++)
    g_assert_true (isfinite (x[i]));

  /* Saving again replaces the folder; F16 weights load too. */
  g_assert_true (ddim_trainer_save_model (tr, out, FALSE, TRUE, &error));
  g_assert_no_error (error);
  g_autoptr (DdimModel) half = ddim_model_load (out, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (half->weights_dtype, ==, "F16");
  g_autofree char *left = hidden_entries (ctx->dir);
  g_assert_null (left);
}

/* The model folder has what diffusers writes: checked against the
 * tiny-cifar fixture (same tensor names, shapes, order and metadata). */
static void
test_model_layout (Ctx *ctx, gconstpointer data)
{
  (void) data;
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  if (root == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  g_autofree char *fixture = g_build_filename (root, "diffusers", "tiny-cifar", NULL);
  g_autofree char *fcfg = g_build_filename (fixture, "config.json", NULL);
  g_autofree char *fweights = g_build_filename (fixture, "diffusion_pytorch_model.safetensors",
                                                NULL);
  g_autofree char *fsched = g_build_filename (fixture, "scheduler", "scheduler_config.json", NULL);
  g_autoptr (GError) error = NULL;
  DdimUNetConfig config;
  g_assert_true (ddim_unet_config_load (fcfg, &config, &error));
  g_autoptr (DdimSchedule) sched = ddim_schedule_load (fsched, &error);
  g_assert_no_error (error);
  DdimTrainOptions o;
  small_options (&o);
  g_autoptr (DdimTrainer) tr = ddim_trainer_new (&config, sched, &o, &error);
  g_assert_no_error (error);
  g_autofree char *out = path_in (ctx, "layout");
  g_assert_true (ddim_trainer_save_model (tr, out, TRUE, FALSE, &error));
  g_assert_no_error (error);

  g_autofree char *weights = g_build_filename (out, "diffusion_pytorch_model.safetensors", NULL);
  g_autoptr (DdimSafetensors) ours = ddim_safetensors_open (weights, &error);
  g_assert_no_error (error);
  g_autoptr (DdimSafetensors) ref = ddim_safetensors_open (fweights, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_safetensors_get_n_tensors (ours), ==,
                    ddim_safetensors_get_n_tensors (ref));
  for (guint i = 0; i < ddim_safetensors_get_n_tensors (ref); i++)
    {
      const DdimTensorInfo *a = ddim_safetensors_get_info_nth (ours, i);
      const DdimTensorInfo *b = ddim_safetensors_get_info_nth (ref, i);
      g_assert_cmpstr (a->name, ==, b->name);
      g_assert_cmpint (a->dtype, ==, b->dtype);
      g_assert_cmpint (a->ndim, ==, b->ndim);
      for (int d = 0; d < a->ndim; d++)
        g_assert_cmpint (a->shape[d], ==, b->shape[d]);
    }
  g_assert_cmpstr (ddim_safetensors_get_metadata (ours, "format"), ==, "pt");

  /* config.json: every key of the fixture, with the same value. */
  g_autofree char *ocfg = g_build_filename (out, "config.json", NULL);
  g_autoptr (JsonParser) pa = json_parser_new ();
  g_autoptr (JsonParser) pb = json_parser_new ();
  g_assert_true (json_parser_load_from_file (pa, ocfg, NULL));
  g_assert_true (json_parser_load_from_file (pb, fcfg, NULL));
  JsonObject *oa = json_node_get_object (json_parser_get_root (pa));
  JsonObject *ob = json_node_get_object (json_parser_get_root (pb));
  g_autoptr (GList) keys = json_object_get_members (ob);
  for (GList *l = keys; l; l = l->next)
    {
      JsonNode *na = json_object_get_member (oa, l->data);
      g_assert_nonnull (na);
      if (g_str_equal (l->data, "_diffusers_version"))
        continue;
      JsonNode *nb = json_object_get_member (ob, l->data);
      if (JSON_NODE_HOLDS_VALUE (na) && json_node_get_value_type (na) != G_TYPE_STRING
          && json_node_get_value_type (na) != G_TYPE_BOOLEAN)
        g_assert_cmpfloat (json_node_get_double (na), ==, json_node_get_double (nb));
      else
        {
          g_autofree char *sa = json_to_string (na, FALSE);
          g_autofree char *sb = json_to_string (nb, FALSE);
          g_assert_cmpstr (sa, ==, sb);
        }
    }
  g_autofree char *osched = g_build_filename (out, "scheduler", "scheduler_config.json", NULL);
  g_autoptr (DdimSchedule) back = ddim_schedule_load (osched, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (back->alphas_cumprod, sizeof (float) * back->num_train_timesteps,
                   sched->alphas_cumprod, sizeof (float) * sched->num_train_timesteps);
}

static gboolean
params_equal (DdimUNet *a, DdimUNet *b)
{
  gsize n = ddim_unet_get_n_params (a);
  return n == ddim_unet_get_n_params (b)
         && memcmp (ddim_unet_get_params (a), ddim_unet_get_params (b), n * sizeof (float)) == 0;
}

static void
test_train_resume (Ctx *ctx, gconstpointer data)
{
  (void) data;
  g_autoptr (DdimDataset) ds = load_fashion (N_IMAGES);
  if (ds == NULL)
    return;
  g_autofree char *ckpt = path_in (ctx, "ckpt.safetensors");
  g_autofree char *csv = path_in (ctx, "resume.csv");
  g_autoptr (GError) error = NULL;
  DdimTrainOptions o;
  small_options (&o);
  o.batch_size = 4;
  o.steps = 20;
  o.warmup_steps = 5;
  o.hflip = TRUE;
  o.weight_decay = 0.01;

  /* Uninterrupted. */
  g_autoptr (DdimTrainer) full = ddim_trainer_new (&ctx->config, ctx->schedule, &o, &error);
  g_assert_no_error (error);
  g_assert_true (ddim_trainer_run (full, ds, 20, &error));
  g_assert_no_error (error);

  /* Interrupted after step 10 (checkpoint every 10 steps)... */
  DdimTrainOptions oc = o;
  oc.checkpoint_every = 10;
  oc.checkpoint_path = ckpt;
  oc.loss_csv_path = csv;
  {
    g_autoptr (DdimTrainer) first = ddim_trainer_new (&ctx->config, ctx->schedule, &oc, &error);
    g_assert_no_error (error);
    g_assert_true (ddim_trainer_run (first, ds, 10, &error));
    g_assert_no_error (error);
  }
  /* ...a stray CSV row of a step the checkpoint does not have... */
  g_autofree char *c1 = NULL;
  g_assert_true (g_file_get_contents (csv, &c1, NULL, NULL));
  g_autofree char *c1x = g_strconcat (c1, "11,9,9,9,9\n", NULL);
  g_assert_true (g_file_set_contents (csv, c1x, -1, NULL));

  int ck_step = 0;
  DdimTrainOptions ck_opts;
  g_assert_true (ddim_train_checkpoint_info (ckpt, NULL, NULL, &ck_opts, &ck_step, &error));
  g_assert_no_error (error);
  g_assert_cmpint (ck_step, ==, 10);
  g_assert_true (ck_opts.hflip);
  g_assert_cmpint (ck_opts.batch_size, ==, 4);

  /* ...resumed to 20. */
  g_autoptr (DdimTrainer) resumed = ddim_trainer_resume (ckpt, &ctx->config, ctx->schedule, &oc,
                                                         &error);
  g_assert_no_error (error);
  g_assert_cmpint (ddim_trainer_get_step (resumed), ==, 10);
  g_assert_true (ddim_trainer_run (resumed, ds, 20, &error));
  g_assert_no_error (error);
  g_assert_true (params_equal (ddim_trainer_get_unet (full), ddim_trainer_get_unet (resumed)));
  g_assert_true (params_equal (ddim_trainer_get_ema_unet (full),
                               ddim_trainer_get_ema_unet (resumed)));

  g_autofree char *c2 = NULL;
  g_assert_true (g_file_get_contents (csv, &c2, NULL, NULL));
  g_auto (GStrv) lines = g_strsplit (c2, "\n", -1);
  g_assert_cmpuint (g_strv_length (lines), ==, 22);
  for (int i = 1; i <= 20; i++)
    {
      g_autofree char *prefix = g_strdup_printf ("%d,", i);
      g_assert_true (g_str_has_prefix (lines[i], prefix));
    }

  /* A different seed or dataset cannot continue the run. */
  DdimTrainOptions other = oc;
  other.seed = 8;
  g_autoptr (DdimTrainer) bad = ddim_trainer_resume (ckpt, &ctx->config, ctx->schedule, &other,
                                                     &error);
  g_assert_null (bad);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_assert_nonnull (strstr (error->message, "seed"));
  g_clear_error (&error);
  g_autoptr (DdimTrainer) again = ddim_trainer_resume (ckpt, &ctx->config, ctx->schedule, &oc,
                                                       &error);
  g_assert_no_error (error);
  g_autoptr (DdimDataset) fewer = load_fashion (N_IMAGES / 2);
  g_assert_false (ddim_trainer_run (again, fewer, 30, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_clear_error (&error);

  /* Cancellation stops before the next step. */
  g_autoptr (GCancellable) cancel = g_cancellable_new ();
  g_cancellable_cancel (cancel);
  DdimTrainOptions oc2 = o;
  oc2.cancellable = cancel;
  g_autoptr (DdimTrainer) cancelled = ddim_trainer_new (&ctx->config, ctx->schedule, &oc2,
                                                        &error);
  g_assert_false (ddim_trainer_run (cancelled, ds, 5, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED);
  g_assert_cmpint (ddim_trainer_get_step (cancelled), ==, 0);
  g_autofree char *left = hidden_entries (ctx->dir);
  g_assert_null (left);
}

static void
test_train_v_prediction (Ctx *ctx, gconstpointer data)
{
  (void) data;
  g_autoptr (DdimDataset) ds = load_fashion (16);
  if (ds == NULL)
    return;
  g_autoptr (GArray) losses = g_array_new (FALSE, FALSE, sizeof (double));
  DdimTrainOptions o;
  small_options (&o);
  o.prediction = DDIM_PREDICT_V;
  o.batch_size = 4;
  o.steps = 6;
  o.progress = record_loss;
  o.progress_data = losses;
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimTrainer) tr = ddim_trainer_new (&ctx->config, ctx->schedule, &o, &error);
  g_assert_no_error (error);
  g_assert_true (ddim_trainer_run (tr, ds, 6, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (losses->len, ==, 6);
  for (guint i = 0; i < losses->len; i++)
    g_assert_true (isfinite (g_array_index (losses, double, i)));
  g_autofree char *out = path_in (ctx, "vmodel");
  g_assert_true (ddim_trainer_save_model (tr, out, TRUE, FALSE, &error));
  g_assert_no_error (error);
  g_autoptr (DdimModel) model = ddim_model_load (out, &error);
  g_assert_no_error (error);
  g_assert_cmpint (model->schedule->prediction, ==, DDIM_PREDICT_V);
}

/* ---- bad input ---- */

static void
test_bad_data (Ctx *ctx, gconstpointer data)
{
  (void) data;
  g_autoptr (GError) error = NULL;

  /* Missing file. */
  g_autofree char *missing = path_in (ctx, "missing-images-idx3-ubyte.gz");
  g_autoptr (DdimDataset) d1 = ddim_dataset_load_idx (missing, NULL, 32, 1, 0, &error);
  g_assert_null (d1);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, missing));
  g_clear_error (&error);
  g_autofree char *nodir = path_in (ctx, "no-such-folder");
  g_autoptr (DdimDataset) d1b = ddim_dataset_load_fashion_mnist (nodir, "train", 32, 1, 0,
                                                                 &error);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "train-images-idx3-ubyte.gz"));
  g_clear_error (&error);

  /* Garbage with a .gz name. */
  g_autofree char *garbage = path_in (ctx, "garbage-idx3-ubyte.gz");
  g_assert_true (g_file_set_contents (garbage, "this is not gzip data at all, just text", -1,
                                      NULL));
  g_autoptr (DdimDataset) d2 = ddim_dataset_load_idx (garbage, NULL, 32, 1, 0, &error);
  g_assert_null (d2);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, garbage));
  g_assert_nonnull (strstr (error->message, "gzip"));
  g_clear_error (&error);

  /* A gzip stream cut in the middle. */
  gsize len;
  g_autofree guint8 *img = make_idx_images (40, 40, 28, 28, &len);
  g_autofree char *full = path_in (ctx, "full-idx3-ubyte.gz");
  write_idx (full, img, len);
  g_autofree char *zbytes = NULL;
  gsize zlen;
  g_assert_true (g_file_get_contents (full, &zbytes, &zlen, NULL));
  g_autofree char *cut = path_in (ctx, "cut-idx3-ubyte.gz");
  g_assert_true (g_file_set_contents (cut, zbytes, (gssize) zlen / 2, NULL));
  g_autoptr (DdimDataset) d3 = ddim_dataset_load_idx (cut, NULL, 32, 1, 0, &error);
  g_assert_null (d3);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, cut));
  g_clear_error (&error);

  /* Valid gzip, but fewer images than the header declares. */
  g_autofree guint8 *shortimg = make_idx_images (10, 3, 28, 28, &len);
  g_autofree char *trunc = path_in (ctx, "trunc-idx3-ubyte.gz");
  write_idx (trunc, shortimg, len);
  g_autoptr (DdimDataset) d4 = ddim_dataset_load_idx (trunc, NULL, 32, 1, 0, &error);
  g_assert_null (d4);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, trunc));
  g_assert_nonnull (strstr (error->message, "truncated"));
  g_clear_error (&error);
  /* Only the first 3 are asked for: fine. */
  g_autoptr (DdimDataset) d4b = ddim_dataset_load_idx (trunc, NULL, 32, 1, 3, &error);
  g_assert_no_error (error);
  g_assert_cmpint (d4b->n, ==, 3);

  /* A label file where images are expected. */
  guint8 lab[9] = { 0, 0, 8, 1, 0, 0, 0, 1, 5 };
  g_autofree char *labels = path_in (ctx, "labels-idx1-ubyte");
  write_idx (labels, lab, sizeof lab);
  g_autoptr (DdimDataset) d5 = ddim_dataset_load_idx (labels, NULL, 32, 1, 0, &error);
  g_assert_null (d5);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, "magic"));
  g_clear_error (&error);

  /* Bad arguments. */
  g_autoptr (DdimDataset) d6 = ddim_dataset_load_idx (full, NULL, 32, 2, 0, &error);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);

  /* A dataset that does not fit the model. */
  g_autoptr (DdimDataset) wrong = ddim_dataset_load_idx (full, NULL, 32, 1, 2, &error);
  g_assert_no_error (error);
  DdimTrainOptions o;
  small_options (&o);
  g_autoptr (DdimTrainer) tr = ddim_trainer_new (&ctx->config, ctx->schedule, &o, &error);
  g_assert_no_error (error);
  g_assert_false (ddim_trainer_run (tr, wrong, 1, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_assert_nonnull (strstr (error->message, "sample_size"));
}

static void
test_bad_checkpoint (Ctx *ctx, gconstpointer data)
{
  (void) data;
  g_autoptr (GError) error = NULL;
  DdimTrainOptions o;
  small_options (&o);
  g_autoptr (DdimTrainer) tr = ddim_trainer_new (&ctx->config, ctx->schedule, &o, &error);
  g_assert_no_error (error);
  g_autofree char *ckpt = path_in (ctx, "ckpt.safetensors");
  g_assert_true (ddim_trainer_save_checkpoint (tr, ckpt, &error));
  g_assert_no_error (error);

  DdimUNetConfig other = ctx->config;
  other.block_out_channels[1] = 64;
  g_autoptr (DdimTrainer) r1 = ddim_trainer_resume (ckpt, &other, ctx->schedule, &o, &error);
  g_assert_null (r1);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_assert_nonnull (strstr (error->message, "block_out_channels"));
  g_assert_nonnull (strstr (error->message, ckpt));
  g_clear_error (&error);

  other = ctx->config;
  other.norm_eps = 1e-6;
  g_autoptr (DdimTrainer) r2 = ddim_trainer_resume (ckpt, &other, ctx->schedule, &o, &error);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_assert_nonnull (strstr (error->message, "norm_eps"));
  g_clear_error (&error);

  g_autoptr (DdimSchedule) sched = ddim_schedule_copy (ctx->schedule);
  sched->num_train_timesteps = 500;
  g_autoptr (DdimTrainer) r3 = ddim_trainer_resume (ckpt, &ctx->config, sched, &o, &error);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_assert_nonnull (strstr (error->message, "num_train_timesteps"));
  g_clear_error (&error);

  /* A model file is not a checkpoint. */
  g_autofree char *model = path_in (ctx, "model");
  g_assert_true (ddim_trainer_save_model (tr, model, FALSE, FALSE, &error));
  g_autofree char *weights = g_build_filename (model, "diffusion_pytorch_model.safetensors",
                                               NULL);
  g_autoptr (DdimTrainer) r4 = ddim_trainer_resume (weights, &ctx->config, ctx->schedule, &o,
                                                    &error);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, "not a ddim training checkpoint"));
  g_clear_error (&error);

  /* Missing checkpoint. */
  g_autofree char *none = path_in (ctx, "none.safetensors");
  g_autoptr (DdimTrainer) r5 = ddim_trainer_resume (none, &ctx->config, ctx->schedule, &o,
                                                    &error);
  g_assert_nonnull (error);
  g_assert_null (r5);
  g_clear_error (&error);

  /* Bad options. */
  DdimTrainOptions bad = o;
  bad.lr = -1;
  g_autoptr (DdimTrainer) r6 = ddim_trainer_new (&ctx->config, ctx->schedule, &bad, &error);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "lr"));
}

static void
test_bad_output (Ctx *ctx, gconstpointer data)
{
  (void) data;
  g_autoptr (GError) error = NULL;
  DdimTrainOptions o;
  small_options (&o);
  g_autoptr (DdimTrainer) tr = ddim_trainer_new (&ctx->config, ctx->schedule, &o, &error);
  g_assert_no_error (error);

  /* Under a regular file: not writable whoever runs the test. */
  g_autofree char *file = path_in (ctx, "file");
  g_assert_true (g_file_set_contents (file, "x", -1, NULL));
  g_autofree char *under = g_build_filename (file, "model", NULL);
  g_assert_false (ddim_trainer_save_model (tr, under, TRUE, FALSE, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, under));
  g_clear_error (&error);

  /* A parent folder that does not exist. */
  g_autofree char *deep = g_build_filename (ctx->dir, "a", "b", "model", NULL);
  g_assert_false (ddim_trainer_save_model (tr, deep, TRUE, FALSE, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "does not exist"));
  g_clear_error (&error);

  /* The output is a file. */
  g_assert_false (ddim_trainer_save_model (tr, file, TRUE, FALSE, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_clear_error (&error);

  /* A folder with other things in it is not replaced. */
  g_autofree char *busy = path_in (ctx, "busy");
  g_assert_cmpint (g_mkdir (busy, 0755), ==, 0);
  g_autofree char *precious = g_build_filename (busy, "precious.txt", NULL);
  g_assert_true (g_file_set_contents (precious, "keep me", -1, NULL));
  g_assert_false (ddim_trainer_save_model (tr, busy, TRUE, FALSE, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "precious.txt"));
  g_clear_error (&error);
  g_assert_true (g_file_test (precious, G_FILE_TEST_EXISTS));

  /* Read-only parent (only meaningful when not root). */
  g_autofree char *ro = path_in (ctx, "ro");
  g_assert_cmpint (g_mkdir (ro, 0555), ==, 0);
  g_autofree char *in_ro = g_build_filename (ro, "model", NULL);
  if (access (ro, W_OK) != 0)
    {
      g_assert_false (ddim_trainer_save_model (tr, in_ro, TRUE, FALSE, &error));
      g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
      g_assert_nonnull (strstr (error->message, ro));
      g_clear_error (&error);
    }
  g_chmod (ro, 0755);

  /* A checkpoint in a missing folder: an error, nothing written. */
  g_autofree char *ck = g_build_filename (ctx->dir, "nodir", "ck.safetensors", NULL);
  g_assert_false (ddim_trainer_save_checkpoint (tr, ck, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_clear_error (&error);

  g_autofree char *left = hidden_entries (ctx->dir);
  g_assert_null (left);
  g_autofree char *left_busy = hidden_entries (busy);
  g_assert_null (left_busy);
}

/* ---- optimiser pieces ---- */

static void
test_optimizer (void)
{
  DdimTrainOptions o;
  ddim_train_options_init (&o);
  o.lr = 1.0;
  o.steps = 110;
  o.warmup_steps = 10;
  o.lr_min_ratio = 0.1;
  g_assert_cmpfloat_with_epsilon (ddim_train_lr_at (&o, 0), 0.1, 1e-12);
  g_assert_cmpfloat_with_epsilon (ddim_train_lr_at (&o, 9), 1.0, 1e-12);
  g_assert_cmpfloat_with_epsilon (ddim_train_lr_at (&o, 10), 1.0, 1e-12);
  g_assert_cmpfloat_with_epsilon (ddim_train_lr_at (&o, 60), 0.55, 1e-12);
  g_assert_cmpfloat_with_epsilon (ddim_train_lr_at (&o, 500), 0.1, 1e-12);

  /* Clipping: norm 5 -> 1. */
  float g[2] = { 3, 4 };
  g_assert_cmpfloat_with_epsilon (ddim_clip_grad_norm (g, 2, 1.0), 5.0, 1e-9);
  g_assert_cmpfloat_with_epsilon (g[0], 0.6, 1e-6);
  g_assert_cmpfloat_with_epsilon (g[1], 0.8, 1e-6);

  /* EMA decay warm-up as diffusers' EMAModel. */
  g_assert_cmpfloat (ddim_ema_decay_at (0.9999, TRUE, 1), ==, 0.0);
  g_assert_cmpfloat_with_epsilon (ddim_ema_decay_at (0.9999, TRUE, 2), 2.0 / 11, 1e-12);
  g_assert_cmpfloat (ddim_ema_decay_at (0.5, TRUE, 1000), ==, 0.5);
  g_assert_cmpfloat (ddim_ema_decay_at (0.9, FALSE, 3), ==, 0.9);

  /* AdamW: the first step moves each parameter by ~lr against the gradient
   * sign; decay shrinks the parameter first. */
  DdimAdamW a = { 0.1, 0.9, 0.999, 1e-8, 0.5 };
  float p[2] = { 1, 1 }, gr[2] = { 2, -3 }, m[2] = { 0 }, v[2] = { 0 };
  ddim_adamw_step (&a, 1, p, gr, m, v, 2, TRUE);
  g_assert_cmpfloat_with_epsilon (p[0], 1 * (1 - 0.05) - 0.1, 1e-6);
  g_assert_cmpfloat_with_epsilon (p[1], 1 * (1 - 0.05) + 0.1, 1e-6);
  float q[1] = { 1 }, gq[1] = { 2 }, mq[1] = { 0 }, vq[1] = { 0 };
  ddim_adamw_step (&a, 1, q, gq, mq, vq, 1, FALSE);
  g_assert_cmpfloat_with_epsilon (q[0], 0.9, 1e-6);

  float ema[1] = { 0 }, par[1] = { 1 };
  ddim_ema_update (ema, par, 1, 0.75);
  g_assert_cmpfloat_with_epsilon (ema[0], 0.25, 1e-7);
}

static void
test_init (void)
{
  /* PyTorch's default init from the table. */
  DdimUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_config_parse (tiny_config, -1, &c, &error));
  g_autoptr (DdimUNet) u = ddim_unet_new_random (&c, 0);
  ddim_train_init_params (u, 5);
  gsize n;
  float *w = ddim_unet_lookup_tensor (u, "down_blocks.0.resnets.0.conv1.weight", &n);
  float *b = ddim_unet_lookup_tensor (u, "down_blocks.0.resnets.0.conv1.bias", NULL);
  float *gn = ddim_unet_lookup_tensor (u, "down_blocks.0.resnets.0.norm1.weight", NULL);
  float *gb = ddim_unet_lookup_tensor (u, "down_blocks.0.resnets.0.norm1.bias", NULL);
  float bound = 1.f / sqrtf (16 * 9);
  double sq = 0;
  for (gsize i = 0; i < n; i++)
    {
      g_assert_cmpfloat (fabsf (w[i]), <=, bound);
      sq += (double) w[i] * w[i];
    }
  /* Variance of U(-a, a) is a^2 / 3. */
  g_assert_cmpfloat_with_epsilon (sq / n, bound * bound / 3, bound * bound / 3 * 0.1);
  for (int i = 0; i < 16; i++)
    {
      g_assert_cmpfloat (fabsf (b[i]), <=, bound);
      g_assert_cmpfloat (gn[i], ==, 1.f);
      g_assert_cmpfloat (gb[i], ==, 0.f);
    }
  float *gq = ddim_unet_lookup_tensor (u, "down_blocks.1.attentions.0.group_norm.weight", NULL);
  g_assert_cmpfloat (gq[3], ==, 1.f);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(path, fn) g_test_add (path, Ctx, NULL, ctx_setup, fn, ctx_teardown)
  g_test_add_func ("/train/optimizer", test_optimizer);
  g_test_add_func ("/train/init", test_init);
  ADD ("/dataset/idx", test_dataset_idx);
  ADD ("/dataset/fashion-mnist", test_dataset_fashion);
  ADD ("/dataset/folder", test_dataset_folder);
  ADD ("/dataset/bad-data", test_bad_data);
  ADD ("/train/loss-decreases", test_train_loss);
  ADD ("/train/model-layout", test_model_layout);
  ADD ("/train/resume", test_train_resume);
  ADD ("/train/v-prediction", test_train_v_prediction);
  ADD ("/train/bad-checkpoint", test_bad_checkpoint);
  ADD ("/train/bad-output", test_bad_output);
#undef ADD
  return g_test_run ();
}
