/* Model families (issue #14): diffusers .bin folders, ermongroup/pesser
 * config.yml + checkpoint, guided-diffusion model_flags.txt + .pt, against
 * the outputs of each family's own code (../shared/fixtures/torch); config
 * parsing and its errors; config.json / scheduler_config.json round trips;
 * gradients and JVPs of the new architecture pieces by finite differences;
 * the benchmark configurations (tests/configs). */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "ddim/ddim.h"
#include "model/family-private.h"

static char *
torch_fixture (const char *rel)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  return root ? g_build_filename (root, "torch", rel, NULL) : NULL;
}

static double
max_abs (const float *a, gsize n)
{
  double m = 0;
  for (gsize i = 0; i < n; i++)
    m = MAX (m, fabs (a[i]));
  return m;
}

static double
max_abs_diff (const float *a, const float *b, gsize n)
{
  double m = 0;
  for (gsize i = 0; i < n; i++)
    m = MAX (m, fabs ((double) a[i] - b[i]));
  return m;
}

static float *
read_case (DdimSafetensors *cases, const char *name, const DdimTensorInfo **info)
{
  g_autoptr (GError) error = NULL;
  *info = ddim_safetensors_lookup (cases, name);
  g_assert_nonnull (*info);
  float *data = ddim_safetensors_read_f32 (cases, name, 0, NULL, &error);
  g_assert_no_error (error);
  return data;
}

typedef struct {
  const char     *dir;        /* under fixtures/torch */
  DdimModelFamily family;
  DdimWeightsFormat format;
} Fixture;

static const Fixture fixtures[] = {
  { "ermongroup/celeba-like", DDIM_MODEL_FAMILY_ERMONGROUP, DDIM_WEIGHTS_TORCH_ZIP },
  { "ermongroup/pesser-cifar-like", DDIM_MODEL_FAMILY_ERMONGROUP, DDIM_WEIGHTS_TORCH_LEGACY },
  { "adm/uncond-256-like", DDIM_MODEL_FAMILY_ADM, DDIM_WEIGHTS_TORCH_ZIP },
  { "diffusers-bin/tiny-cifar-bin", DDIM_MODEL_FAMILY_DIFFUSERS, DDIM_WEIGHTS_TORCH_ZIP },
};

static gboolean
load_fixture (const Fixture *fx, DdimModel **m, DdimSafetensors **cases)
{
  g_autofree char *folder = torch_fixture (fx->dir);
  if (folder == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return FALSE;
    }
  g_autofree char *cases_path = g_build_filename (folder, "cases.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  *m = ddim_model_load (folder, &error);
  g_assert_no_error (error);
  g_assert_cmpint ((*m)->family, ==, fx->family);
  g_assert_cmpint ((*m)->weights_format, ==, fx->format);
  g_assert_nonnull ((*m)->weights_path);
  g_assert_cmpint (strlen ((*m)->weights_sha256), ==, 64);
  *cases = ddim_safetensors_open (cases_path, &error);
  g_assert_no_error (error);
  return TRUE;
}

/* forward.*: the eps channels of the reference (the first out_channels of
 * each sample; learned-sigma models have twice as many). */
static void
test_forward (gconstpointer data)
{
  const Fixture *fx = data;
  DdimModel *m;
  DdimSafetensors *cases;
  if (!load_fixture (fx, &m, &cases))
    return;
  const DdimTensorInfo *xi, *ti, *oi;
  g_autofree float *x = read_case (cases, "forward.x", &xi);
  g_autofree float *t = read_case (cases, "forward.t", &ti);
  g_autofree float *ref = read_case (cases, "forward.out", &oi);
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  int n = (int) xi->shape[0], h = (int) xi->shape[2], w = (int) xi->shape[3];
  int ref_c = (int) oi->shape[1], oc = c->out_channels;
  g_assert_cmpint (ref_c, ==, c->learned_sigma ? 2 * oc : oc);
  gsize plane = (gsize) h * w, per = (gsize) oc * plane;
  g_autofree float *out = g_new (float, n * per);
  g_autofree float *eps_ref = g_new (float, n * per);
  for (int b = 0; b < n; b++)
    memcpy (eps_ref + b * per, ref + (gsize) b * ref_c * plane, per * sizeof (float));
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_forward (m->unet, x, n, h, w, t, out, &error));
  g_assert_no_error (error);
  double d = max_abs_diff (out, eps_ref, n * per), r = max_abs (eps_ref, n * per);
  g_test_message ("%s forward: max error %.3g of max %.3g (%.3g relative)", fx->dir, d, r, d / r);
  g_assert_cmpfloat (d, <, 1e-4 * r);
  ddim_safetensors_free (cases);
  ddim_model_free (m);
}

/* sample.*: 10 DDIM steps, leading spacing, eta 0, no clipping. */
static void
test_sample (gconstpointer data)
{
  const Fixture *fx = data;
  DdimModel *m;
  DdimSafetensors *cases;
  if (!load_fixture (fx, &m, &cases))
    return;
  const DdimTensorInfo *xi, *ri;
  g_autofree float *x = read_case (cases, "sample.xT", &xi);
  g_autofree float *ref = read_case (cases, "sample.x0", &ri);
  DdimRunOptions o;
  ddim_run_options_init (&o, m->schedule);
  o.steps = 10;
  o.spacing = DDIM_SPACING_LEADING;
  o.clip_sample = FALSE;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_sample (m->unet, m->schedule, x, (int) xi->shape[0], (int) xi->shape[2],
                              (int) xi->shape[3], &o, &error));
  g_assert_no_error (error);
  double d = max_abs_diff (x, ref, ri->n_elements), r = max_abs (ref, ri->n_elements);
  g_test_message ("%s sample: max error %.3g of max %.3g (%.3g relative)", fx->dir, d, r, d / r);
  g_assert_cmpfloat (d, <, 1e-3 * r);
  ddim_safetensors_free (cases);
  ddim_model_free (m);
}

/* reverse.*: guided-diffusion's ddim_reverse_sample from the first spaced
 * timestep (0) up to 900: eps at the current timestep, x0 from it, then
 * the next level's alpha. */
static void
test_adm_reverse (void)
{
  DdimModel *m;
  DdimSafetensors *cases;
  if (!load_fixture (&fixtures[2], &m, &cases))
    return;
  const DdimTensorInfo *xi, *ri;
  g_autofree float *x = read_case (cases, "reverse.x0", &xi);
  g_autofree float *ref = read_case (cases, "reverse.xT", &ri);
  int h = (int) xi->shape[2], w = (int) xi->shape[3];
  gsize count = xi->n_elements;
  g_autofree float *out = g_new (float, count), *x0 = g_new (float, count);
  g_autofree float *eps = g_new (float, count);
  g_autoptr (GError) error = NULL;
  for (int k = 0; k < 9; k++)
    {
      float t = (float) (100 * k);
      g_assert_true (ddim_unet_forward (m->unet, x, 1, h, w, &t, out, &error));
      float a = ddim_schedule_alpha (m->schedule, 100 * k);
      float an = ddim_schedule_alpha (m->schedule, 100 * (k + 1));
      ddim_model_output_to_x0_eps (m->schedule->prediction, a, x, out, count, x0, eps);
      for (gsize i = 0; i < count; i++)
        x[i] = x0[i] * sqrtf (an) + sqrtf (1.f - an) * eps[i];
    }
  double d = max_abs_diff (x, ref, count), r = max_abs (ref, count);
  g_test_message ("adm reverse: max error %.3g of max %.3g (%.3g relative)", d, r, d / r);
  g_assert_cmpfloat (d, <, 1e-3 * r);
  ddim_safetensors_free (cases);
  ddim_model_free (m);
}

/* The .bin folder is its safetensors twin: same parameters, bit for bit. */
static void
test_bin_twin (void)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  if (root == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  g_autofree char *bin_dir = g_build_filename (root, "torch", "diffusers-bin", "tiny-cifar-bin", NULL);
  g_autofree char *st_dir = g_build_filename (root, "diffusers", "tiny-cifar", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimModel) a = ddim_model_load (bin_dir, &error);
  g_assert_no_error (error);
  g_autoptr (DdimModel) b = ddim_model_load (st_dir, &error);
  g_assert_no_error (error);
  g_assert_cmpint (a->weights_format, ==, DDIM_WEIGHTS_TORCH_ZIP);
  g_assert_cmpint (b->weights_format, ==, DDIM_WEIGHTS_SAFETENSORS);
  g_assert_cmpstr (a->weights_dtype, ==, "F32");
  gsize np = ddim_unet_get_n_params (a->unet);
  g_assert_cmpuint (np, ==, ddim_unet_get_n_params (b->unet));
  g_assert_cmpmem (ddim_unet_get_params (a->unet), np * sizeof (float),
                   ddim_unet_get_params (b->unet), np * sizeof (float));
  g_assert_cmpint (a->schedule->num_train_timesteps, ==, b->schedule->num_train_timesteps);
  g_assert_cmpmem (a->schedule->alphas_cumprod, 4000, b->schedule->alphas_cumprod, 4000);
}

static void
copy_file (const char *from, const char *to)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (from, &data, &len, NULL));
  g_assert_true (g_file_set_contents (to, data, (gssize) len, NULL));
}

/* Sharded weights (an index json naming each tensor's shard): torch.save
 * shards, and safetensors shards written here with half the tensors each. */
static void
test_sharded (void)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  if (root == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  g_autofree char *st_dir = g_build_filename (root, "diffusers", "tiny-cifar", NULL);
  g_autofree char *bin = g_build_filename (root, "torch", "diffusers-bin", "tiny-cifar-bin",
                                           "diffusion_pytorch_model.bin", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimModel) ref = ddim_model_load (st_dir, &error);
  g_assert_no_error (error);
  DdimUNet *u = ref->unet;
  guint nt = ddim_unet_get_n_tensors (u);
  for (int kind = 0; kind < 2; kind++)
    {
      g_autofree char *dir = g_dir_make_tmp ("ddim-shards-XXXXXX", &error);
      g_assert_no_error (error);
      g_autofree char *cfg_from = g_build_filename (st_dir, "config.json", NULL);
      g_autofree char *cfg_to = g_build_filename (dir, "config.json", NULL);
      copy_file (cfg_from, cfg_to);
      const char *ext = kind ? "safetensors" : "bin";
      g_autofree char *a = g_strdup_printf ("diffusion_pytorch_model-00001-of-00002.%s", ext);
      g_autofree char *b = g_strdup_printf ("diffusion_pytorch_model-00002-of-00002.%s", ext);
      g_autofree char *pa = g_build_filename (dir, a, NULL), *pb = g_build_filename (dir, b, NULL);
      g_autoptr (DdimSafetensorsWriter) wa = ddim_safetensors_writer_new ();
      g_autoptr (DdimSafetensorsWriter) wb = ddim_safetensors_writer_new ();
      g_autoptr (GString) index = g_string_new ("{\"metadata\": {}, \"weight_map\": {");
      for (guint i = 0; i < nt; i++)
        {
          int ndim;
          gint64 shape[4];
          float *data;
          const char *name = ddim_unet_get_tensor (u, i, &ndim, shape, &data);
          ddim_safetensors_writer_add_f32 (i % 2 ? wb : wa, name, ndim, shape, data);
          g_string_append_printf (index, "%s\"%s\": \"%s\"", i ? ", " : "", name, i % 2 ? b : a);
        }
      g_string_append (index, "}}");
      if (kind)
        {
          g_assert_true (ddim_safetensors_writer_save (wa, pa, &error));
          g_assert_true (ddim_safetensors_writer_save (wb, pb, &error));
        }
      else
        {
          /* Both shards hold every tensor; the index decides. */
          copy_file (bin, pa);
          copy_file (bin, pb);
        }
      g_autofree char *ip = g_strdup_printf ("%s/diffusion_pytorch_model.%s.index.json", dir, ext);
      g_assert_true (g_file_set_contents (ip, index->str, -1, NULL));
      g_autoptr (DdimModel) m = ddim_model_load (dir, &error);
      g_assert_no_error (error);
      g_assert_cmpstr (m->weights_path, ==, pa);
      g_assert_cmpint (m->weights_format, ==, kind ? DDIM_WEIGHTS_SAFETENSORS : DDIM_WEIGHTS_TORCH_ZIP);
      gsize np = ddim_unet_get_n_params (u);
      g_assert_cmpmem (ddim_unet_get_params (m->unet), np * 4, ddim_unet_get_params (u), np * 4);
      /* A shard the index names but the folder lacks. */
      g_remove (pb);
      g_autoptr (DdimModel) bad = ddim_model_load (dir, &error);
      g_assert_null (bad);
      g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
      g_clear_error (&error);
      g_remove (pa);
      g_remove (ip);
      g_remove (cfg_to);
      g_rmdir (dir);
    }
}

/* What `ddim convert` writes (config.json, the parameter table as
 * safetensors, scheduler_config.json) loads back to the same model: the
 * same parameters, bit-identical outputs, the same alphas. For the ADM
 * fixture also without the extra learned-sigma key, as a diffusers
 * conversion writes it (variance_type learned_range and 6 channels out). */
static void
test_convert_roundtrip (gconstpointer data)
{
  const Fixture *fx = data;
  DdimModel *m;
  DdimSafetensors *cases;
  if (!load_fixture (fx, &m, &cases))
    return;
  g_autoptr (GError) error = NULL;
  for (int variant = 0; variant < (m->unet && ddim_unet_get_config (m->unet)->learned_sigma ? 2 : 1);
       variant++)
    {
      g_autofree char *dir = g_dir_make_tmp ("ddim-convert-XXXXXX", &error);
      g_assert_no_error (error);
      g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
      g_autofree char *wts = g_build_filename (dir, "diffusion_pytorch_model.safetensors", NULL);
      g_autofree char *sch = g_build_filename (dir, "scheduler_config.json", NULL);
      g_autofree char *json = ddim_unet_config_to_json (ddim_unet_get_config (m->unet));
      if (variant == 1)
        {
          char *key = strstr (json, "  \"ddim_learned_sigma\": true,\n");
          g_assert_nonnull (key);
          memmove (key, key + strlen ("  \"ddim_learned_sigma\": true,\n"),
                   strlen (key + strlen ("  \"ddim_learned_sigma\": true,\n")) + 1);
        }
      g_assert_true (g_file_set_contents (cfg, json, -1, NULL));
      g_autofree char *sj = ddim_schedule_to_json (m->schedule);
      g_assert_true (g_file_set_contents (sch, sj, -1, NULL));
      g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
      for (guint i = 0; i < ddim_unet_get_n_tensors (m->unet); i++)
        {
          int ndim;
          gint64 shape[4];
          float *p;
          const char *name = ddim_unet_get_tensor (m->unet, i, &ndim, shape, &p);
          ddim_safetensors_writer_add_f32 (w, name, ndim, shape, p);
        }
      g_assert_true (ddim_safetensors_writer_save (w, wts, &error));
      g_autoptr (DdimModel) back = ddim_model_load (dir, &error);
      g_assert_no_error (error);
      g_assert_cmpint (back->family, ==, DDIM_MODEL_FAMILY_DIFFUSERS);
      g_assert_cmpmem (ddim_unet_get_config (back->unet), sizeof (DdimUNetConfig),
                       ddim_unet_get_config (m->unet), sizeof (DdimUNetConfig));
      int T = m->schedule->num_train_timesteps;
      g_assert_cmpint (back->schedule->num_train_timesteps, ==, T);
      g_assert_cmpmem (back->schedule->alphas_cumprod, T * 4, m->schedule->alphas_cumprod, T * 4);
      g_assert_cmpint (back->schedule->prediction, ==, m->schedule->prediction);
      const DdimTensorInfo *xi, *ti;
      g_autofree float *x = read_case (cases, "forward.x", &xi);
      g_autofree float *t = read_case (cases, "forward.t", &ti);
      const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
      int n = (int) xi->shape[0], h = (int) xi->shape[2], wd = (int) xi->shape[3];
      gsize count = (gsize) n * c->out_channels * h * wd;
      g_autofree float *o1 = g_new (float, count), *o2 = g_new (float, count);
      g_assert_true (ddim_unet_forward (m->unet, x, n, h, wd, t, o1, &error));
      g_assert_true (ddim_unet_forward (back->unet, x, n, h, wd, t, o2, &error));
      g_assert_cmpmem (o1, count * 4, o2, count * 4);
      g_remove (cfg);
      g_remove (wts);
      g_remove (sch);
      g_rmdir (dir);
    }
  ddim_safetensors_free (cases);
  ddim_model_free (m);
}

/* ---- config parsing -------------------------------------------------- */

static const char *sdedit_yml =
    "data:\n  dataset: CelebA_HQ\n  image_size: 256\n  channels: 3\n"
    "model:\n  type: simple\n  in_channels: 3\n  out_ch: 3\n  ch: 128\n"
    "  ch_mult: [1, 1, 2, 2, 4, 4]\n  num_res_blocks: 2\n  attn_resolutions: [16, ]\n"
    "  dropout: 0.0\n  var_type: fixedsmall\n  ema_rate: 0.999\n  ema: True\n"
    "  resamp_with_conv: True\n"
    "diffusion:\n  beta_schedule: linear\n  beta_start: 0.0001\n  beta_end: 0.02\n"
    "  num_diffusion_timesteps: 1000\n";

static void
check_roundtrip (const DdimUNetConfig *c, const DdimSchedule *s)
{
  g_autofree char *json = ddim_unet_config_to_json (c);
  DdimUNetConfig back;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_config_parse (json, -1, &back, &error));
  g_assert_no_error (error);
  g_assert_cmpmem (&back, sizeof back, c, sizeof *c);
  if (s)
    {
      g_autofree char *sj = ddim_schedule_to_json (s);
      g_autoptr (DdimSchedule) s2 = ddim_schedule_parse (sj, -1, &error);
      g_assert_no_error (error);
      g_assert_cmpint (s2->num_train_timesteps, ==, s->num_train_timesteps);
      g_assert_cmpint (s2->arithmetic, ==, s->arithmetic);
      g_assert_cmpint (s2->learned_variance, ==, s->learned_variance);
      g_assert_cmpint (s2->prediction, ==, s->prediction);
      g_assert_cmpint (s2->clip_sample, ==, s->clip_sample);
      g_assert_cmpmem (s2->alphas_cumprod, s->num_train_timesteps * sizeof (float),
                       s->alphas_cumprod, s->num_train_timesteps * sizeof (float));
    }
}

static void
test_ermongroup_parse (void)
{
  DdimUNetConfig c;
  g_autoptr (DdimSchedule) s = NULL;
  gboolean ema = FALSE;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_ermongroup_config_parse (sdedit_yml, strlen (sdedit_yml), &c, &s, &ema,
                                               &error));
  g_assert_no_error (error);
  g_assert_true (ema);
  static const int boc[] = { 128, 128, 256, 256, 512, 512 };
  g_assert_cmpint (c.n_levels, ==, 6);
  g_assert_cmpmem (c.block_out_channels, sizeof boc, boc, sizeof boc);
  for (int i = 0; i < 6; i++)
    {
      g_assert_cmpint (c.down_blocks[i], ==, i == 4 ? DDIM_BLOCK_ATTENTION : DDIM_BLOCK_PLAIN);
      g_assert_cmpint (c.up_blocks[i], ==, i == 1 ? DDIM_BLOCK_ATTENTION : DDIM_BLOCK_PLAIN);
    }
  g_assert_false (c.flip_sin_to_cos);
  g_assert_cmpfloat (c.freq_shift, ==, 1);
  g_assert_cmpfloat (c.norm_eps, ==, 1e-6);
  g_assert_cmpint (c.downsample_padding, ==, 0);
  g_assert_cmpint (c.attention_head_dim, ==, 0);
  g_assert_cmpint (s->arithmetic, ==, DDIM_ALPHAS_FLOAT64_BETAS);
  g_assert_false (s->clip_sample);
  /* ermongroup: float64 linspace rounded to float32 betas, products in
   * double; alpha_bar_999 is tiny but positive. */
  g_assert_cmpfloat (fabs (s->alphas_cumprod[0] - 0.9999f), <, 1e-7);
  g_assert_cmpfloat (s->alphas_cumprod[999], >, 0);
  check_roundtrip (&c, s);

  /* resamp_with_conv false round-trips through the extra key. */
  g_autofree char *noconv = g_strdup (sdedit_yml);
  char *p = strstr (noconv, "resamp_with_conv: True");
  memcpy (p, "resamp_with_conv: no  ", strlen ("resamp_with_conv: no  "));
  g_assert_true (ddim_ermongroup_config_parse (noconv, strlen (noconv), &c, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_false (c.resample_with_conv);
  g_autofree char *json = ddim_unet_config_to_json (&c);
  g_assert_nonnull (strstr (json, "\"ddim_resample_with_conv\": false"));
  check_roundtrip (&c, NULL);
}

static void
expect_yml_error (const char *yml, int code, const char *substring)
{
  DdimUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_false (ddim_ermongroup_config_parse (yml, strlen (yml), &c, NULL, NULL, &error));
  g_assert_error (error, DDIM_ERROR, code);
  if (strstr (error->message, substring) == NULL)
    g_error ("message '%s' lacks '%s'", error->message, substring);
}

static char *
replace (const char *text, const char *from, const char *to)
{
  const char *p = strstr (text, from);
  g_assert_nonnull (p);
  return g_strdup_printf ("%.*s%s%s", (int) (p - text), text, to, p + strlen (from));
}

static void
test_ermongroup_errors (void)
{
  expect_yml_error ("model: [1, 2", DDIM_ERROR_FORMAT, "not valid YAML");
  expect_yml_error ("- 1\n- 2\n", DDIM_ERROR_FORMAT, "top level must be a mapping");
  expect_yml_error ("", DDIM_ERROR_FORMAT, "config.yml");
  g_autofree char *a = replace (sdedit_yml, "  ch: 128\n", "");
  expect_yml_error (a, DDIM_ERROR_FORMAT, "model.ch is missing");
  g_autofree char *b = replace (sdedit_yml, "ch: 128", "ch: many");
  expect_yml_error (b, DDIM_ERROR_FORMAT, "model.ch must be an integer");
  g_autofree char *c = replace (sdedit_yml, "resamp_with_conv: True", "resamp_with_conv: maybe");
  expect_yml_error (c, DDIM_ERROR_FORMAT, "model.resamp_with_conv must be true or false");
  g_autofree char *d = replace (sdedit_yml, "beta_schedule: linear", "beta_schedule: jsd");
  expect_yml_error (d, DDIM_ERROR_UNSUPPORTED, "diffusion.beta_schedule 'jsd'");
  g_autofree char *e = replace (sdedit_yml, "[1, 1, 2, 2, 4, 4]", "[2, 2]");
  expect_yml_error (e, DDIM_ERROR_UNSUPPORTED, "ch_mult must start with 1");
  g_autofree char *f = replace (sdedit_yml, "ch: 128", "ch: 100");
  expect_yml_error (f, DDIM_ERROR_UNSUPPORTED, "norm_num_groups 32 does not divide");
  g_autofree char *g = replace (sdedit_yml, "type: simple", "type: fancy");
  expect_yml_error (g, DDIM_ERROR_UNSUPPORTED, "model.type 'fancy'");
  g_autofree char *h = replace (sdedit_yml, "beta_end: 0.02", "beta_end: 2");
  expect_yml_error (h, DDIM_ERROR_FORMAT, "beta_end 2");
}

static const char *adm_uncond_flags =
    "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256 "
    "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
    "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True\n";

static void
test_adm_parse (void)
{
  DdimUNetConfig c;
  g_autoptr (DdimSchedule) s = NULL;
  gboolean new_order = TRUE;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_adm_flags_parse (adm_uncond_flags, strlen (adm_uncond_flags), &c, &s,
                                       &new_order, &error));
  g_assert_no_error (error);
  g_assert_false (new_order);
  static const int boc[] = { 256, 256, 512, 512, 1024, 1024 };
  g_assert_cmpint (c.n_levels, ==, 6);
  g_assert_cmpmem (c.block_out_channels, sizeof boc, boc, sizeof boc);
  /* attention at 32, 16, 8 px: downsampling factors 8, 16, 32. */
  for (int i = 0; i < 6; i++)
    g_assert_cmpint (c.down_blocks[i], ==, i >= 3 ? DDIM_BLOCK_ATTENTION : DDIM_BLOCK_PLAIN);
  g_assert_true (c.learned_sigma);
  g_assert_cmpint (c.out_channels, ==, 3);
  g_assert_true (c.scale_shift);
  g_assert_cmpint (c.downsample_type, ==, DDIM_RESAMPLE_RESNET);
  g_assert_cmpint (c.attention_head_dim, ==, 64);
  g_assert_cmpint (c.attn_norm_num_groups, ==, 32);
  g_assert_true (s->learned_variance);
  g_assert_cmpint (s->arithmetic, ==, DDIM_ALPHAS_FLOAT64);
  check_roundtrip (&c, s);
  g_autofree char *json = ddim_unet_config_to_json (&c);
  g_assert_nonnull (strstr (json, "\"ddim_learned_sigma\": true"));
  g_assert_nonnull (strstr (json, "\"out_channels\": 6"));
  g_assert_nonnull (strstr (json, "ResnetDownsampleBlock2D"));

  /* Defaults, num_heads (fixed count, separate upsampling count), cosine,
   * new attention order, a shell assignment line and --flag=value. */
  static const char *flags64 =
      "# the 64x64 model\nMODEL_FLAGS=\"--attention_resolutions 32,16,8 --num_channels 192 "
      "--num_heads 4 --num_heads_upsample 2 --use_new_attention_order True\"\n"
      "--noise_schedule=cosine --diffusion_steps 4000 --dropout 0.1 --predict_xstart y\n";
  g_clear_pointer (&s, ddim_schedule_free);
  g_assert_true (ddim_adm_flags_parse (flags64, strlen (flags64), &c, &s, &new_order, &error));
  g_assert_no_error (error);
  g_assert_true (new_order);
  g_assert_cmpint (c.sample_size, ==, 64);
  g_assert_cmpint (c.n_levels, ==, 4);
  g_assert_cmpint (c.block_out_channels[3], ==, 4 * 192);
  g_assert_cmpint (c.attention_heads, ==, 4);
  g_assert_cmpint (c.attention_heads_up, ==, 2);
  g_assert_cmpint (c.downsample_type, ==, DDIM_RESAMPLE_CONV);
  g_assert_false (c.learned_sigma);
  g_clear_pointer (&s, ddim_schedule_free);
  g_assert_true (ddim_adm_flags_parse (flags64, strlen (flags64), &c, &s, NULL, &error));
  g_assert_cmpint (s->beta_schedule, ==, DDIM_BETA_SQUAREDCOS_CAP_V2);
  g_assert_cmpint (s->num_train_timesteps, ==, 4000);
  g_assert_cmpint (s->prediction, ==, DDIM_PREDICT_SAMPLE);
  check_roundtrip (&c, s);
}

static void
expect_flags_error (const char *flags, int code, const char *substring)
{
  DdimUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_false (ddim_adm_flags_parse (flags, strlen (flags), &c, NULL, NULL, &error));
  g_assert_error (error, DDIM_ERROR, code);
  if (strstr (error->message, substring) == NULL)
    g_error ("message '%s' lacks '%s'", error->message, substring);
}

static void
test_adm_errors (void)
{
  expect_flags_error ("--image_size 256 --num_chanels 128", DDIM_ERROR_FORMAT,
                      "unknown flag --num_chanels");
  expect_flags_error ("--image_size big", DDIM_ERROR_FORMAT, "--image_size needs an integer");
  expect_flags_error ("--learn_sigma perhaps", DDIM_ERROR_FORMAT,
                      "--learn_sigma needs True or False");
  expect_flags_error ("--image_size 256 --class_cond True", DDIM_ERROR_UNSUPPORTED,
                      "class-conditional models (--class_cond True) are not supported");
  expect_flags_error ("--image_size", DDIM_ERROR_FORMAT, "--image_size has no value");
  expect_flags_error ("image_size 256", DDIM_ERROR_FORMAT, "expected a flag");
  expect_flags_error ("--image_size 96", DDIM_ERROR_FORMAT, "needs --channel_mult");
  expect_flags_error ("--image_size 512", DDIM_ERROR_UNSUPPORTED, "(0.5,1,1,2,2,4,4)");
  expect_flags_error ("--noise_schedule sqrt", DDIM_ERROR_UNSUPPORTED,
                      "--noise_schedule 'sqrt' is not supported");
  expect_flags_error ("--channel_mult 1,x", DDIM_ERROR_FORMAT, "--channel_mult needs");
  expect_flags_error ("--num_channels 100", DDIM_ERROR_UNSUPPORTED, "does not divide");
  expect_flags_error ("--num_heads 3", DDIM_ERROR_UNSUPPORTED, "attention heads (3");
  expect_flags_error ("FLAGS=\"--image_size 64", DDIM_ERROR_FORMAT, "line 1");
}

/* Folders that are not models: clear errors naming what is wrong. */
static void
test_folder_errors (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("ddim-families-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *yml = g_build_filename (dir, "config.yml", NULL);
  g_autofree char *flags = g_build_filename (dir, "model_flags.txt", NULL);
  g_autofree char *ck1 = g_build_filename (dir, "a.ckpt", NULL);
  g_autofree char *ck2 = g_build_filename (dir, "b.pth", NULL);
  DdimModel *m = ddim_model_load (dir, &error);
  g_assert_null (m);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "has no config.json (diffusers), config.yml"));
  g_clear_error (&error);

  g_assert_true (g_file_set_contents (yml, sdedit_yml, -1, NULL));
  m = ddim_model_load (dir, &error);
  g_assert_null (m);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "has config.yml but no *.ckpt/*.pth checkpoint"));
  g_clear_error (&error);

  /* The config alone is enough for ddim_model_load_config. */
  DdimUNetConfig c;
  DdimModelFamily family;
  g_autoptr (DdimSchedule) s = NULL;
  g_assert_true (ddim_model_load_config (dir, &c, &s, &family, &error));
  g_assert_no_error (error);
  g_assert_cmpint (family, ==, DDIM_MODEL_FAMILY_ERMONGROUP);
  g_assert_cmpstr (ddim_model_family_name (family), ==, "ermongroup");
  g_assert_cmpint (c.sample_size, ==, 256);

  g_assert_true (g_file_set_contents (ck1, "x", 1, NULL));
  g_assert_true (g_file_set_contents (ck2, "y", 1, NULL));
  m = ddim_model_load (dir, &error);
  g_assert_null (m);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, "several candidate weight files (a.ckpt, b.pth)"));
  g_clear_error (&error);

  g_remove (ck2);
  m = ddim_model_load (dir, &error);   /* a one-byte "checkpoint" */
  g_assert_null (m);
  g_assert_nonnull (error);
  g_clear_error (&error);

  g_assert_true (g_file_set_contents (flags, "--image_size 64", -1, NULL));
  m = ddim_model_load (dir, &error);
  g_assert_null (m);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, "has both config.yml and model_flags.txt"));
  g_clear_error (&error);

  g_remove (yml);
  g_remove (ck1);
  g_assert_true (ddim_model_load_config (dir, &c, NULL, &family, &error));
  g_assert_cmpint (family, ==, DDIM_MODEL_FAMILY_ADM);
  g_assert_cmpstr (ddim_model_family_name (family), ==, "adm");
  m = ddim_model_load (dir, &error);
  g_assert_null (m);
  g_assert_nonnull (strstr (error->message, "has model_flags.txt but no *.pt checkpoint"));
  g_clear_error (&error);
  /* A class-conditional checkpoint under class_cond False flags. */
  g_autofree char *pt = g_build_filename (dir, "model.pt", NULL);
  {
    g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
    float emb[4] = { 0 };
    gint64 shape[2] = { 2, 2 };
    ddim_safetensors_writer_add_f32 (w, "label_emb.weight", 2, shape, emb);
    g_assert_true (ddim_safetensors_writer_save (w, pt, &error));
  }
  m = ddim_model_load (dir, &error);
  g_assert_null (m);
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (error->message, "class embeddings (label_emb.weight)"));
  g_clear_error (&error);
  g_remove (pt);
  g_remove (flags);
  g_rmdir (dir);
  g_assert_cmpstr (ddim_weights_format_name (DDIM_WEIGHTS_TORCH_LEGACY), ==, "torch-legacy");
  g_assert_cmpstr (ddim_weights_format_name (DDIM_WEIGHTS_TORCH_ZIP), ==, "torch-zip");
  g_assert_cmpstr (ddim_weights_format_name (DDIM_WEIGHTS_SAFETENSORS), ==, "safetensors");
}

/* ---- the new pieces, by finite differences ---------------------------- */

/* Small random models with every new piece: guided-diffusion style
 * (resblock up/down, scale-shift, learned sigma, fixed head counts) and
 * ermongroup without resampling convs. */
static DdimUNet *
small_model (int kind, guint64 seed)
{
  static const char *yml =
      "data: {image_size: 8}\n"
      "model: {ch: 32, out_ch: 2, in_channels: 2, ch_mult: [1, 2], num_res_blocks: 1,\n"
      "        attn_resolutions: [4], resamp_with_conv: false}\n"
      "diffusion: {beta_schedule: linear, beta_start: 0.0001, beta_end: 0.02,\n"
      "            num_diffusion_timesteps: 1000}\n";
  static const char *flags =
      "--image_size 8 --num_channels 32 --channel_mult 1,2 --num_res_blocks 1 "
      "--attention_resolutions 4 --num_heads 2 --num_heads_upsample 4 --learn_sigma True "
      "--resblock_updown True --use_scale_shift_norm True\n";
  DdimUNetConfig c;
  g_autoptr (GError) error = NULL;
  if (kind == 0)
    g_assert_true (ddim_ermongroup_config_parse (yml, strlen (yml), &c, NULL, NULL, &error));
  else
    g_assert_true (ddim_adm_flags_parse (flags, strlen (flags), &c, NULL, NULL, &error));
  g_assert_no_error (error);
  check_roundtrip (&c, NULL);
  return ddim_unet_new_random (&c, seed);
}

static double
dotd (const float *a, const float *b, gsize n)
{
  double s = 0;
  for (gsize i = 0; i < n; i++)
    s += (double) a[i] * b[i];
  return s;
}

/* sum(w * model(x)) at x + s v for the given parameters. */
static double
loss_at (DdimUNet *u, const float *x, const float *v, double s, int n, int S, const float *t,
         const float *w, gsize xs, gsize os)
{
  g_autofree float *xp = g_new (float, n * xs), *out = g_new (float, n * os);
  for (gsize i = 0; i < n * xs; i++)
    xp[i] = (float) (x[i] + s * (v ? v[i] : 0));
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_forward (u, xp, n, S, S, t, out, &error));
  return dotd (w, out, n * os);
}

/* Richardson-extrapolated central difference of f along a direction. */
static double
richardson (double fp2, double fm2, double fp1, double fm1, double step)
{
  double c2 = (fp2 - fm2) / (4 * step), c1 = (fp1 - fm1) / (2 * step);
  return (4 * c1 - c2) / 3;
}

static void
test_grad (gconstpointer data)
{
  int kind = GPOINTER_TO_INT (data);
  g_autoptr (DdimUNet) u = small_model (kind, 7 + kind);
  const DdimUNetConfig *c = ddim_unet_get_config (u);
  int n = 2, S = 8;
  gsize xs = (gsize) c->in_channels * S * S, os = (gsize) c->out_channels * S * S;
  g_autofree float *x = g_new (float, n * xs), *v = g_new (float, n * xs);
  g_autofree float *w = g_new (float, n * os), *gx = g_new (float, n * xs);
  gsize np = ddim_unet_get_n_params (u);
  g_autofree float *gp = g_new0 (float, np);
  float t[2] = { 500, 40 };
  ddim_randn (1, x, n * xs);
  ddim_randn (2, v, n * xs);
  ddim_randn (3, w, n * os);
  g_autoptr (GError) error = NULL;
  g_autofree float *out_tape = g_new (float, n * os), *out_fast = g_new (float, n * os);
  DdimUNetVjp io = { .grad_x = gx, .grad_params = gp, .out = out_tape };
  g_assert_true (ddim_unet_vjp (u, x, n, S, S, t, w, &io, &error));
  g_assert_no_error (error);
  /* The taped forward is the fast one. */
  g_assert_true (ddim_unet_forward (u, x, n, S, S, t, out_fast, &error));
  g_assert_cmpmem (out_tape, n * os * sizeof (float), out_fast, n * os * sizeof (float));

  /* Input gradient along a random direction. */
  double h = 1e-2;
  double fd = richardson (loss_at (u, x, v, 2 * h, n, S, t, w, xs, os),
                          loss_at (u, x, v, -2 * h, n, S, t, w, xs, os),
                          loss_at (u, x, v, h, n, S, t, w, xs, os),
                          loss_at (u, x, v, -h, n, S, t, w, xs, os), h);
  double an = dotd (gx, v, n * xs);
  g_test_message ("kind %d grad_x: directional %.6g, finite difference %.6g", kind, an, fd);
  g_assert_cmpfloat (fabs (an - fd), <, 2e-3 * MAX (fabs (fd), 1e-3));

  /* Parameter gradients of the new pieces (and a few old ones). */
  const char *names[] = {
    "down_blocks.0.downsamplers.0.conv1.weight", "down_blocks.0.downsamplers.0.norm1.weight",
    "down_blocks.0.downsamplers.0.time_emb_proj.weight", "up_blocks.0.upsamplers.0.conv2.weight",
    "up_blocks.0.upsamplers.0.norm1.bias", "conv_out.weight", "up_blocks.0.attentions.0.to_q.weight",
    "down_blocks.0.resnets.0.conv1.weight", "time_embedding.linear_1.weight",
    "down_blocks.0.resnets.0.conv2.weight", "down_blocks.0.resnets.0.norm1.weight",
    "down_blocks.1.resnets.0.conv1.weight", "mid_block.resnets.0.conv1.weight",
    "up_blocks.1.resnets.0.conv1.weight", "conv_in.weight",
  };
  float *params = ddim_unet_get_params (u);
  int checked = 0;
  for (guint k = 0; k < G_N_ELEMENTS (names); k++)
    {
      gsize cnt = 0;
      float *p = ddim_unet_lookup_tensor (u, names[k], &cnt);
      if (p == NULL)
        continue;
      gssize off = ddim_unet_get_param_offset (u, names[k]);
      g_autofree float *dir = g_new (float, cnt), *saved = g_memdup2 (p, cnt * sizeof (float));
      /* A direction of 1% of the tensor's size: the loss is far from
       * linear in a conv weight moved by a fixed step. */
      ddim_randn (100 + k, dir, cnt);
      double rms = sqrt (dotd (saved, saved, cnt) / cnt);
      for (gsize i = 0; i < cnt; i++)
        dir[i] *= (float) (0.01 * rms);
      double lp[4], steps[4] = { 2, -2, 1, -1 };
      for (int s = 0; s < 4; s++)
        {
          for (gsize i = 0; i < cnt; i++)
            p[i] = saved[i] + (float) steps[s] * dir[i];
          lp[s] = loss_at (u, x, NULL, 0, n, S, t, w, xs, os);
        }
      memcpy (p, saved, cnt * sizeof (float));
      double num = richardson (lp[0], lp[1], lp[2], lp[3], 1);
      double ana = dotd (gp + off, dir, cnt);
      g_test_message ("kind %d grad %s: directional %.6g, finite difference %.6g", kind,
                      names[k], ana, num);
      g_assert_cmpfloat (fabs (ana - num), <, 5e-3 * fabs (num) + 2e-5);
      checked++;
      (void) params;
    }
  g_assert_cmpint (checked, >=, kind == 1 ? 8 : 4);

  /* h-space JVP against central differences and the VJP (adjoint). */
  int hc, hh, hw;
  ddim_unet_hspace_shape (u, S, S, &hc, &hh, &hw);
  gsize hs = (gsize) n * hc * hh * hw;
  g_autofree float *jv = g_new (float, hs), *hp = g_new (float, hs), *hm = g_new (float, hs);
  g_autofree float *uu = g_new (float, hs), *jtu = g_new (float, n * xs);
  g_autofree float *xp = g_new (float, n * xs), *outp = g_new (float, n * os);
  g_assert_true (ddim_unet_hspace_jvp (u, x, n, S, S, t, v, NULL, jv, &error));
  for (int sgn = 0; sgn < 2; sgn++)
    {
      for (gsize i = 0; i < n * xs; i++)
        xp[i] = x[i] + (sgn ? -1e-2f : 1e-2f) * v[i];
      g_assert_true (ddim_unet_forward_pair (u, xp, n, S, S, t, NULL, sgn ? hm : hp, outp, NULL,
                                             &error));
    }
  double err = 0;
  for (gsize i = 0; i < hs; i++)
    err = MAX (err, fabs ((hp[i] - hm[i]) / 2e-2 - jv[i]));
  g_test_message ("kind %d J v: max error %.3g of max %.3g", kind, err, max_abs (jv, hs));
  g_assert_cmpfloat (err, <, 5e-3 * max_abs (jv, hs));
  ddim_randn (9, uu, hs);
  g_assert_true (ddim_unet_hspace_vjp (u, x, n, S, S, t, uu, NULL, jtu, &error));
  double lhs = dotd (jv, uu, hs), rhs = dotd (v, jtu, n * xs);
  g_assert_cmpfloat (fabs (lhs - rhs), <, 1e-4 * sqrt (dotd (jv, jv, hs) * dotd (uu, uu, hs)));
}

/* guided-diffusion's fused qkv in both head orders: a random model's
 * parameters written under guided-diffusion's names, q, k and v fused
 * here (legacy: per head [q k v]; new: [all q, all k, all v]), load back
 * to the same parameters. */
static void
test_adm_qkv_orders (void)
{
  static const char *flags =
      "--image_size 8 --num_channels 32 --channel_mult 1,2 --num_res_blocks 1 "
      "--attention_resolutions 8,4 --num_heads 2 --num_heads_upsample 4 --learn_sigma True "
      "--resblock_updown True --use_new_attention_order %s\n";
  for (int new_order = 0; new_order < 2; new_order++)
    {
      g_autofree char *text = g_strdup_printf (flags, new_order ? "True" : "False");
      DdimUNetConfig c;
      g_autoptr (GError) error = NULL;
      g_assert_true (ddim_adm_flags_parse (text, strlen (text), &c, NULL, NULL, &error));
      g_autoptr (DdimUNet) u = ddim_unet_new_random (&c, 11 + new_order);
      g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
      g_autoptr (GHashTable) fused = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
      g_autoptr (GHashTable) fused_shape = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
      int n_fused_parts = 0;
      for (guint i = 0; i < ddim_unet_get_n_tensors (u); i++)
        {
          int ndim;
          gint64 shape[4];
          float *p;
          const char *name = ddim_unet_get_tensor (u, i, &ndim, shape, &p);
          DdimCheckpointKey k;
          g_assert_true (ddim_adm_key (&c, new_order, name, &k));
          if (k.part < 0)
            {
              /* Attention projections are Conv1d [o, i, 1] there. */
              gint64 s3[4] = { shape[0], shape[1], 1, 0 };
              gboolean conv1d = ndim == 2 && strstr (k.key, "proj_out") != NULL;
              ddim_safetensors_writer_add_f32 (w, k.key, conv1d ? 3 : ndim, conv1d ? s3 : shape, p);
              g_free (k.key);
              continue;
            }
          gsize C = (gsize) shape[0], row = ndim == 2 ? (gsize) shape[1] : 1, ch = C / k.heads;
          float *buf = g_hash_table_lookup (fused, k.key);
          if (buf == NULL)
            {
              buf = g_new0 (float, 3 * C * row);
              g_hash_table_insert (fused, g_strdup (k.key), buf);
              gint64 *fs = g_new0 (gint64, 4);
              fs[0] = 3 * (gint64) C;
              fs[1] = ndim == 2 ? (gint64) row : 0;
              fs[2] = ndim == 2 ? 1 : 0;
              fs[3] = ndim == 2 ? 3 : 1;   /* ndim of the fused tensor */
              g_hash_table_insert (fused_shape, g_strdup (k.key), fs);
            }
          for (int h = 0; h < k.heads; h++)
            for (gsize r = 0; r < ch; r++)
              {
                gsize dst = new_order ? k.part * C + h * ch + r : h * 3 * ch + k.part * ch + r;
                memcpy (buf + dst * row, p + (h * ch + r) * row, row * sizeof (float));
              }
          n_fused_parts++;
          g_free (k.key);
        }
      GHashTableIter it;
      gpointer key, val;
      g_hash_table_iter_init (&it, fused);
      while (g_hash_table_iter_next (&it, &key, &val))
        {
          gint64 *fs = g_hash_table_lookup (fused_shape, key);
          ddim_safetensors_writer_add_f32 (w, key, (int) fs[3], fs, val);
        }
      g_assert_cmpint (n_fused_parts, >=, 3 * 2 * 5);   /* q, k, v weight and bias, 5 layers */
      g_autofree char *dir = g_dir_make_tmp ("ddim-adm-XXXXXX", &error);
      g_autofree char *ff = g_build_filename (dir, "model_flags.txt", NULL);
      g_autofree char *pt = g_build_filename (dir, "model.pt", NULL);
      g_assert_true (g_file_set_contents (ff, text, -1, NULL));
      g_assert_true (ddim_safetensors_writer_save (w, pt, &error));
      g_autoptr (DdimModel) m = ddim_model_load (dir, &error);
      g_assert_no_error (error);
      gsize np = ddim_unet_get_n_params (u);
      g_assert_cmpmem (ddim_unet_get_params (m->unet), np * 4, ddim_unet_get_params (u), np * 4);
      /* The other order scrambles the heads. */
      g_autofree char *other = g_strdup_printf (flags, new_order ? "False" : "True");
      g_assert_true (g_file_set_contents (ff, other, -1, NULL));
      g_autoptr (DdimModel) m2 = ddim_model_load (dir, &error);
      g_assert_no_error (error);
      g_assert_true (memcmp (ddim_unet_get_params (m2->unet), ddim_unet_get_params (u), np * 4) != 0);
      g_remove (ff);
      g_remove (pt);
      g_rmdir (dir);
    }
}

/* ---- the benchmark configurations ------------------------------------- */

static void
test_bench_configs (void)
{
  const char *root = g_getenv ("DDIM_TEST_CONFIGS");
  if (root == NULL)
    {
      g_test_skip ("DDIM_TEST_CONFIGS not set");
      return;
    }
  static const struct { const char *dir; DdimModelFamily family; int levels; } cfgs[] = {
    { "sdedit-256", DDIM_MODEL_FAMILY_ERMONGROUP, 6 },
    { "adm-p2-256", DDIM_MODEL_FAMILY_ADM, 6 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cfgs); i++)
    {
      g_autofree char *dir = g_build_filename (root, cfgs[i].dir, NULL);
      DdimUNetConfig c;
      DdimModelFamily family;
      g_autoptr (DdimSchedule) s = NULL;
      g_autoptr (GError) error = NULL;
      g_assert_true (ddim_model_load_config (dir, &c, &s, &family, &error));
      g_assert_no_error (error);
      g_assert_cmpint (family, ==, cfgs[i].family);
      g_assert_cmpint (c.sample_size, ==, 256);
      g_assert_cmpint (c.n_levels, ==, cfgs[i].levels);
      check_roundtrip (&c, s);
      /* One forward of a random-weights model at 32 x 32. */
      g_autoptr (DdimUNet) u = ddim_unet_new_random (&c, 3);
      gsize count = (gsize) c.in_channels * 32 * 32;
      g_autofree float *x = g_new (float, count), *out = g_new (float, count);
      float t = 500;
      ddim_randn (4, x, count);
      g_assert_true (ddim_unet_forward (u, x, 1, 32, 32, &t, out, &error));
      g_assert_no_error (error);
      for (gsize k = 0; k < count; k++)
        g_assert_true (isfinite (out[k]));
      g_test_message ("%s: %zu parameters", cfgs[i].dir, ddim_unet_get_n_params (u));
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (fixtures); i++)
    {
      g_autofree char *p1 = g_strdup_printf ("/families/%s/forward", fixtures[i].dir);
      g_test_add_data_func (p1, &fixtures[i], test_forward);
      if (fixtures[i].family != DDIM_MODEL_FAMILY_DIFFUSERS)
        {
          g_autofree char *p3 = g_strdup_printf ("/families/%s/convert", fixtures[i].dir);
          g_test_add_data_func (p3, &fixtures[i], test_convert_roundtrip);
          g_autofree char *p2 = g_strdup_printf ("/families/%s/sample", fixtures[i].dir);
          g_test_add_data_func (p2, &fixtures[i], test_sample);
        }
    }
  g_test_add_func ("/families/adm/reverse", test_adm_reverse);
  g_test_add_func ("/families/diffusers-bin/twin", test_bin_twin);
  g_test_add_func ("/families/diffusers/sharded", test_sharded);
  g_test_add_func ("/families/ermongroup/parse", test_ermongroup_parse);
  g_test_add_func ("/families/ermongroup/errors", test_ermongroup_errors);
  g_test_add_func ("/families/adm/parse", test_adm_parse);
  g_test_add_func ("/families/adm/errors", test_adm_errors);
  g_test_add_func ("/families/adm/qkv-orders", test_adm_qkv_orders);
  g_test_add_func ("/families/folder-errors", test_folder_errors);
  g_test_add_data_func ("/families/grad/ermongroup-pool", GINT_TO_POINTER (0), test_grad);
  g_test_add_data_func ("/families/grad/adm-resnet-resample", GINT_TO_POINTER (1), test_grad);
  g_test_add_func ("/families/bench-configs", test_bench_configs);
  return g_test_run ();
}
