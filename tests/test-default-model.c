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
/* The encoder's latents of the samples (projected onto the Gaussian
 * shell), decoded with 20 DDIM steps; set from MODEL.md ("Learned
 * encoder") minus a margin: measured 8.21 to 13.37 dB, mean 11.53. */
#define ENCODER_MIN_PSNR  6.5
#define ENCODER_MEAN_PSNR 10.5
/* ... and it must beat chance: N(0, I) latents (RANDOM_SEEDS draws per
 * sample) decoded the same way, by at least this many dB on average. */
#define RANDOM_SEEDS        3
#define ENCODER_OVER_RANDOM 1.0

/* The model, or NULL (the test marked skipped) while there is none. */
static DdimModel *
load_default_model (void)
{
  const char *dir = g_getenv ("DDIM_DEFAULT_MODEL");
  g_assert_nonnull (dir);
  g_autofree char *config = g_build_filename (dir, "config.json", NULL);
  if (!g_file_test (config, G_FILE_TEST_IS_REGULAR))
    {
      g_test_skip ("models/fashion-mnist-32 is not there yet");
      return NULL;
    }
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
    return;
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

/* The PNGs in samples/, in name order, as x0 [n, 1, S, S] in [-1, 1]. */
static float *
load_samples (DdimModel *model, int *n_out)
{
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

  int n = (int) names->len, s = ddim_unet_get_config (model->unet)->sample_size;
  gsize per = (gsize) s * s;
  float *x0 = g_new (float, per * n);
  for (int i = 0; i < n; i++)
    {
      g_autofree char *path = g_build_filename (samples, names->pdata[i], NULL);
      g_autoptr (DdimImage) img = ddim_image_load (path, 1, 0, 0, &error);
      g_assert_no_error (error);
      g_assert_cmpint (img->width, ==, s);
      g_assert_cmpint (img->height, ==, s);
      memcpy (x0 + per * i, img->data, per * sizeof (float));
    }
  *n_out = n;
  return x0;
}

/* The PSNR of each of the @n reconstructions @x of @x0, each at least
 * @min_psnr, and their mean (returned) at least @mean_psnr. */
static double
assert_reconstructions (const float *x, const float *x0, int n, gsize per, double min_psnr,
                        double mean_psnr)
{
  double sum = 0;
  for (int i = 0; i < n; i++)
    {
      double p = ddim_psnr (x + per * i, x0 + per * i, per);
      g_test_message ("sample %d: %.2f dB", i, p);
      g_assert_cmpfloat (p, >=, min_psnr);
      sum += p;
    }
  g_test_message ("mean %.2f dB over %d samples", sum / n, n);
  g_assert_cmpfloat (sum / n, >=, mean_psnr);
  return sum / n;
}

/* Every PNG in samples/ comes back from its 50-step DDIM latent. */
static void
test_samples_reconstruct (void)
{
  g_autoptr (DdimModel) model = load_default_model ();
  if (model == NULL)
    return;
  int n, s = ddim_unet_get_config (model->unet)->sample_size;
  gsize per = (gsize) s * s;
  g_autofree float *x0 = load_samples (model, &n);
  g_autofree float *x = g_memdup2 (x0, per * n * sizeof (float));
  g_autoptr (GError) error = NULL;
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = 50;
  g_assert_true (ddim_invert (model->unet, model->schedule, x, n, s, s, &o, &error));
  g_assert_no_error (error);
  g_assert_true (ddim_sample (model->unet, model->schedule, x, n, s, s, &o, &error));
  g_assert_no_error (error);
  assert_reconstructions (x, x0, n, per, SAMPLE_MIN_PSNR, SAMPLE_MEAN_PSNR);
}

/* directions.safetensors: one per-timestep h-space direction per class,
 * named as `directions fit --by-class` names them, then the PCA
 * components; all made for this model, of unit (RMS) norm, with a
 * recommended strength. */
static void
test_directions (void)
{
  g_autoptr (DdimModel) model = load_default_model ();
  if (model == NULL)
    return;
  static const char *const classes[] = { "t-shirt", "trouser", "pullover", "dress", "coat",
                                         "sandal", "shirt", "sneaker", "bag", "ankle-boot" };
  g_autofree char *path = g_build_filename (model->path, DDIM_DIRECTIONS_FILE, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_load (path, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_direction_set_get_n (set), ==, G_N_ELEMENTS (classes) + 4);
  for (guint i = 0; i < ddim_direction_set_get_n (set); i++)
    {
      const DdimDirection *d = ddim_direction_set_get_nth (set, i);
      if (i < G_N_ELEMENTS (classes))
        {
          g_assert_cmpstr (d->name, ==, classes[i]);
          g_assert_cmpint (d->kind, ==, DDIM_DIRECTION_SUPERVISED);
          /* Per timestep from t = 150 (MODEL.md: per-timestep prototype
           * directions edit far more often into their class than pooled
           * mean differences). */
          g_assert_cmpint (d->n_timesteps, >=, 2);
          g_assert_cmpint (d->t_min, ==, 150);
          g_assert_cmpstr (d->method, ==, "prototype");
        }
      else
        g_assert_cmpint (d->kind, ==, DDIM_DIRECTION_PCA);
      g_assert_cmpint (d->space, ==, DDIM_SPACE_H);
      g_assert_true (ddim_direction_check (d, model->unet, model->weights_sha256, 32, 32,
                                           &error));
      g_assert_no_error (error);
      /* Unit norm; per timestep, unit RMS norm of the blocks. */
      double norm2 = 0;
      for (gsize k = 0; k < ddim_direction_get_n_elements (d); k++)
        norm2 += (double) d->data[k] * d->data[k];
      g_assert_cmpfloat_with_epsilon (norm2 / MAX (1, d->n_timesteps), 1.0, 1e-4);
      g_assert_cmpfloat (d->strength_max, >, 0);
    }
  const DdimDirection *first = ddim_direction_set_lookup (set, "component-1", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (first->name, ==, "pca-1");
}

/* encoder/: made for these weights and 20 steps; its latents of the
 * samples decode (20-step DDIM) above a PSNR set from MODEL.md's
 * measurement minus a margin, and better than random latents. */
static void
test_encoder (void)
{
  g_autoptr (DdimModel) model = load_default_model ();
  if (model == NULL)
    return;
  g_autofree char *dir = g_build_filename (model->path, DDIM_ENCODER_DIR_NAME, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimEncoder) encoder = ddim_encoder_load (dir, model->weights_sha256, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ddim_encoder_get_steps (encoder), ==, 20);
  int n, s = ddim_unet_get_config (model->unet)->sample_size;
  gsize per = (gsize) s * s;
  g_autofree float *x0 = load_samples (model, &n);
  g_autofree float *enc = g_new (float, per * n);
  g_assert_true (ddim_encoder_encode (encoder, x0, n, s, s, enc, &error));
  g_assert_no_error (error);
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = ddim_encoder_get_steps (encoder);
  o.spacing = ddim_encoder_get_spacing (encoder);
  g_assert_true (ddim_sample (model->unet, model->schedule, enc, n, s, s, &o, &error));
  g_assert_no_error (error);
  double encoder_mean = assert_reconstructions (enc, x0, n, per, ENCODER_MIN_PSNR,
                                                ENCODER_MEAN_PSNR);

  g_autofree float *noise = g_new (float, per * n * RANDOM_SEEDS);
  ddim_randn (1, noise, per * n * RANDOM_SEEDS);
  g_assert_true (ddim_sample (model->unet, model->schedule, noise, n * RANDOM_SEEDS, s, s, &o,
                              &error));
  g_assert_no_error (error);
  double random_sum = 0;
  for (int i = 0; i < n * RANDOM_SEEDS; i++)
    random_sum += ddim_psnr (noise + per * i, x0 + per * (i % n), per);
  double random_mean = random_sum / (n * RANDOM_SEEDS);
  g_test_message ("random latents: mean %.2f dB; encoder %.2f dB", random_mean, encoder_mean);
  g_assert_cmpfloat (encoder_mean, >=, random_mean + ENCODER_OVER_RANDOM);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/default-model/layout", test_layout);
  g_test_add_func ("/default-model/samples-reconstruct", test_samples_reconstruct);
  g_test_add_func ("/default-model/directions", test_directions);
  g_test_add_func ("/default-model/encoder", test_encoder);
  return g_test_run ();
}
