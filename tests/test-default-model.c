/* The embedded default model, models/fashion-mnist-32 (DDIM_DEFAULT_MODEL
 * names the folder): what MODEL.md promises about it. Skipped, saying so,
 * while the folder has no model. */
#include <math.h>
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "ddim/ddim.h"

/* Plain DDIM inversion and reconstruction of the shipped samples at 50
 * steps (eps at the current timestep, the default), in dB. MODEL.md
 * ("Sample images") gives the measured values; these are those minus a
 * margin of about 1.7-1.9 dB (measured: 20.4 to 30.5 dB, mean 27.2). */
#define SAMPLE_MIN_PSNR  18.5
#define SAMPLE_MEAN_PSNR 25.5

static DdimModel *
load_default_model (void)
{
  const char *dir = g_getenv ("DDIM_DEFAULT_MODEL");
  g_assert_nonnull (dir);
  g_autofree char *config = g_build_filename (dir, "config.json", NULL);
  if (!g_file_test (config, G_FILE_TEST_IS_REGULAR))
    return NULL;
  g_autoptr (GError) error = NULL;
  DdimModel *model = ddim_model_load (dir, &error);
  g_assert_no_error (error);
  return model;
}

/* The architecture MODEL.md describes, at most 25 MB of weights. */
static void
test_layout (void)
{
  g_autoptr (DdimModel) model = load_default_model ();
  if (model == NULL)
    {
      g_test_skip ("models/fashion-mnist-32 is not there yet");
      return;
    }
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  g_assert_cmpint (c->sample_size, ==, 32);
  g_assert_cmpint (c->in_channels, ==, 1);
  g_assert_cmpint (c->out_channels, ==, 1);
  g_assert_cmpuint (ddim_unet_get_n_params (model->unet), ==, 2734945);
  g_assert_cmpint (model->schedule->num_train_timesteps, ==, 1000);
  g_autofree char *weights = g_build_filename (model->path, "diffusion_pytorch_model.safetensors",
                                               NULL);
  GStatBuf st;
  g_assert_cmpint (g_stat (weights, &st), ==, 0);
  g_assert_cmpint (st.st_size, <=, 25 * 1000 * 1000);
}

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(char *const *) a, *(char *const *) b);
}

/* Every PNG in samples/ comes back from its 50-step DDIM latent. */
static void
test_samples_reconstruct (void)
{
  g_autoptr (DdimModel) model = load_default_model ();
  if (model == NULL)
    {
      g_test_skip ("models/fashion-mnist-32 is not there yet");
      return;
    }
  g_autofree char *samples = g_build_filename (model->path, "samples", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GDir) dir = g_dir_open (samples, 0, &error);
  g_assert_no_error (error);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  for (const char *name; (name = g_dir_read_name (dir)) != NULL;)
    if (g_str_has_suffix (name, ".png"))
      g_ptr_array_add (names, g_strdup (name));
  g_assert_cmpuint (names->len, >=, 4);
  g_ptr_array_sort (names, compare_names);

  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  int n = (int) names->len, s = c->sample_size;
  gsize per = (gsize) s * s;
  g_autofree float *x0 = g_new (float, per * n);
  for (int i = 0; i < n; i++)
    {
      g_autofree char *path = g_build_filename (samples, names->pdata[i], NULL);
      g_autoptr (DdimImage) img = ddim_image_load (path, 1, 0, 0, &error);
      g_assert_no_error (error);
      g_assert_cmpint (img->width, ==, s);
      g_assert_cmpint (img->height, ==, s);
      memcpy (x0 + per * i, img->data, per * sizeof (float));
    }
  g_autofree float *x = g_memdup2 (x0, per * n * sizeof (float));
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = 50;
  g_assert_true (ddim_invert (model->unet, model->schedule, x, n, s, s, &o, &error));
  g_assert_no_error (error);
  g_assert_true (ddim_sample (model->unet, model->schedule, x, n, s, s, &o, &error));
  g_assert_no_error (error);
  double sum = 0;
  for (int i = 0; i < n; i++)
    {
      double p = ddim_psnr (x + per * i, x0 + per * i, per);
      g_test_message ("%s: %.2f dB", (char *) names->pdata[i], p);
      g_assert_cmpfloat (p, >=, SAMPLE_MIN_PSNR);
      sum += p;
    }
  g_test_message ("mean %.2f dB over %d samples", sum / n, n);
  g_assert_cmpfloat (sum / n, >=, SAMPLE_MEAN_PSNR);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/default-model/layout", test_layout);
  g_test_add_func ("/default-model/samples-reconstruct", test_samples_reconstruct);
  return g_test_run ();
}
