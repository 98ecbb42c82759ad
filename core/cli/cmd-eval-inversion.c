/* ddim eval-inversion: reconstruction quality and cost of each inversion
 * method at several step counts, on a set of images. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ddim/dataset.h"
#include "ddim/encoder.h"
#include "ddim/exact.h"
#include "ddim/image.h"
#include "ddim/optimize.h"
#include "ddim/safetensors.h"
#include "progress.h"

#define CMD "eval-inversion"

/* Images as x0 tensors at the model's size: image files, or safetensors
 * files holding x0 [N, C, H, W]. */
static GPtrArray *
load_images (DdimModel *model, char **paths, int max_images, int *h, int *w, GError **error)
{
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  g_autoptr (GPtrArray) images = g_ptr_array_new_with_free_func (g_free);
  *h = *w = 0;
  for (int i = 0; paths[i] && (max_images <= 0 || (int) images->len < max_images); i++)
    {
      if (cli_has_suffix (paths[i], ".safetensors"))
        {
          g_autoptr (DdimSafetensors) st = ddim_safetensors_open (paths[i], error);
          if (st == NULL)
            return NULL;
          const DdimTensorInfo *info = ddim_safetensors_lookup (st, "x0");
          if (info == NULL || info->ndim != 4 || info->shape[1] != c->in_channels)
            {
              g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                           "%s: expected a tensor 'x0' [N, %d, H, W]", paths[i], c->in_channels);
              return NULL;
            }
          g_autofree float *all = ddim_safetensors_read_f32 (st, "x0", 0, NULL, error);
          if (all == NULL)
            return NULL;
          int ih = (int) info->shape[2], iw = (int) info->shape[3];
          if ((*h && (*h != ih || *w != iw)) || !ddim_unet_check_size (model->unet, ih, iw, error))
            {
              if (error && *error == NULL)
                g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                             "%s: all images must have the same size", paths[i]);
              return NULL;
            }
          *h = ih;
          *w = iw;
          gsize per = (gsize) c->in_channels * ih * iw;
          for (gint64 k = 0; k < info->shape[0] && (max_images <= 0 || (int) images->len < max_images); k++)
            g_ptr_array_add (images, g_memdup2 (all + k * per, per * sizeof (float)));
        }
      else
        {
          if (*h && (*h != c->sample_size || *w != c->sample_size))
            {
              g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                           "%s: all images must have the same size", paths[i]);
              return NULL;
            }
          DdimImage *img = ddim_image_load (paths[i], c->in_channels, c->sample_size,
                                            c->sample_size, error);
          if (img == NULL)
            return NULL;
          *h = img->height;
          *w = img->width;
          g_ptr_array_add (images, g_steal_pointer (&img->data));
          ddim_image_free (img);
        }
    }
  if (images->len == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "no images given");
      return NULL;
    }
  return g_steal_pointer (&images);
}

/* The first @max_images images of a Fashion-MNIST split ("fashion-mnist-test"
 * or "fashion-mnist", the training split) at the model's size. */
static GPtrArray *
load_dataset (DdimModel *model, const char *data, int max_images, int *h, int *w,
              GError **error)
{
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  const char *split = g_str_equal (data, "fashion-mnist-test") ? "test"
                      : g_str_equal (data, "fashion-mnist") ? "train" : NULL;
  if (split == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "--data must be fashion-mnist-test or fashion-mnist, not '%s'", data);
      return NULL;
    }
  g_autoptr (DdimDataset) ds = ddim_dataset_load_fashion_mnist (NULL, split, c->sample_size,
                                                                c->in_channels, max_images,
                                                                error);
  if (ds == NULL)
    return NULL;
  gsize per = (gsize) ds->channels * ds->size * ds->size;
  GPtrArray *images = g_ptr_array_new_with_free_func (g_free);
  for (int i = 0; i < ds->n; i++)
    g_ptr_array_add (images, g_memdup2 (ddim_dataset_get_image (ds, i), per * sizeof (float)));
  *h = *w = ds->size;
  return images;
}

/* DIR/PREFIX-NNN.png */
static gboolean
save_png (const char *dir, const char *prefix, guint index, int channels, int h, int w,
          const float *x, GError **error)
{
  g_autofree char *name = g_strdup_printf ("%s-%03u.png", prefix, index);
  g_autofree char *path = g_build_filename (dir, name, NULL);
  return cli_save_images (path, CLI_OUTPUT_PNG, NULL, 1, channels, h, w, x, NULL, error);
}

static gboolean
parse_list (const char *s, GArray *out, gboolean numbers, GError **error)
{
  g_auto (GStrv) parts = g_strsplit (s, ",", -1);
  for (int i = 0; parts[i]; i++)
    {
      g_strstrip (parts[i]);
      if (numbers)
        {
          char *end = NULL;
          long v = strtol (parts[i], &end, 10);
          if (*parts[i] == '\0' || *end != '\0' || v < 1 || v > 100000)
            {
              g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                           "'%s' is not a step count", parts[i]);
              return FALSE;
            }
          int iv = (int) v;
          g_array_append_val (out, iv);
        }
      else
        {
          DdimInversionMethod m;
          if (!ddim_inversion_method_from_string (parts[i], &m, error))
            return FALSE;
          g_array_append_val (out, m);
        }
    }
  return TRUE;
}

int
cli_cmd_eval_inversion (int argc, char **argv)
{
  g_autofree char *methods_str = NULL;
  g_autofree char *steps_str = NULL;
  g_autofree char *eps_at_str = NULL;
  g_autofree char *data = NULL, *encoder_dir = NULL, *save_dir = NULL;
  int max_images = 0, iters = 50;
  DdimOptimizeOptions optimize_defaults;
  ddim_optimize_options_init (&optimize_defaults);
  /* Options start at the library's default, so any value given is checked. */
  double lr = optimize_defaults.learning_rate;
  GOptionEntry entries[] = {
    { "methods", 0, 0, G_OPTION_ARG_STRING, &methods_str,
      "Comma-separated methods (default ddim,fixed-point,edict,bdia; also optimize, hybrid "
      "and encoder)", "LIST" },
    { "steps", 0, 0, G_OPTION_ARG_STRING, &steps_str,
      "Comma-separated step counts (default 10,20,50)", "LIST" },
    { "eps-at", 0, 0, G_OPTION_ARG_STRING, &eps_at_str,
      "Where ddim and bdia evaluate the noise prediction: current or target", "WHERE" },
    { "max-images", 0, 0, G_OPTION_ARG_INT, &max_images,
      "Use at most N images (with --data: the first N, default 500)", "N" },
    { "data", 0, 0, G_OPTION_ARG_STRING, &data,
      "Images from a data set instead of files: fashion-mnist-test (or fashion-mnist, the "
      "training split)", "DATA" },
    { "encoder", 0, 0, G_OPTION_ARG_FILENAME, &encoder_dir,
      "encoder/hybrid: the encoder folder (default MODEL/encoder when it exists)", "DIR" },
    { "iters", 0, 0, G_OPTION_ARG_INT, &iters,
      "optimize/hybrid: iterations per image (default 50)", "N" },
    { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &lr,
      "optimize/hybrid: Adam step size (default 0.01)", "LR" },
    { "save-dir", 0, 0, G_OPTION_ARG_FILENAME, &save_dir,
      "Also write every image as DIR/original-NNN.png and its reconstructions as "
      "DIR/METHOD-STEPS-NNN.png (NNN counts from 000)", "DIR" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL] [IMAGES...]");
  g_option_context_set_summary (ctx,
      "Inverts every image with each method and step count, decodes it with the\n"
      "method's decoder and prints the reconstruction PSNR (mean and standard\n"
      "deviation, dB on the [0, 1] scale), the model evaluations and the seconds\n"
      "per image (inversion + decoding). IMAGES are image files (resized to the\n"
      "model's size) or .safetensors files with x0 [N, C, H, W] in [-1, 1], or\n"
      "--data fashion-mnist-test takes the first --max-images test images. The\n"
      "encoder method runs only at the step count its encoder was trained for;\n"
      "hybrid starts from the encoder's output when there is an encoder.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (CMD, -1, &argc, &argv, &args, &rc))
    return rc;
  if (argc < 2)
    return cli_usage_error (CMD, "missing IMAGES (or --data)");
  if (argc < 3 && data == NULL)
    return cli_usage_error (CMD, "missing IMAGES (image files, .safetensors files or --data "
                            "fashion-mnist-test)");
  if (argc > 2 && data != NULL)
    return cli_usage_error (CMD, "give IMAGES or --data, not both");
  if (!cli_check_range (CMD, "--iters", iters, 0, 1000000, &rc))
    return rc;
  if (!(lr > 0))
    return cli_usage_error (CMD, "--lr must be > 0");
  if (!cli_check_range (CMD, "--max-images", max_images, 0, G_MAXINT, &rc))
    return rc;

  g_autoptr (GArray) methods = g_array_new (FALSE, FALSE, sizeof (DdimInversionMethod));
  g_autoptr (GArray) steps = g_array_new (FALSE, FALSE, sizeof (int));
  g_autoptr (GError) error = NULL;
  if (!parse_list (methods_str ? methods_str : "ddim,fixed-point,edict,bdia", methods, FALSE,
                   &error)
      || !parse_list (steps_str ? steps_str : "10,20,50", steps, TRUE, &error))
    return cli_usage_error (CMD, "%s", error->message);

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  int h, w;
  g_autoptr (GPtrArray) images = data ? load_dataset (model, data, max_images > 0 ? max_images
                                                                               : 500, &h, &w,
                                                      &error)
                                      : load_images (model, argv + 2, max_images, &h, &w,
                                                     &error);
  if (images == NULL)
    return cli_error (CMD, error);
  gboolean wants_encoder = FALSE;
  for (guint mi = 0; mi < methods->len; mi++)
    {
      DdimInversionMethod m = g_array_index (methods, DdimInversionMethod, mi);
      wants_encoder = wants_encoder || m == DDIM_METHOD_ENCODER || m == DDIM_METHOD_HYBRID;
    }
  g_autoptr (DdimEncoder) encoder = NULL;
  g_autofree char *encoder_path = encoder_dir ? g_strdup (encoder_dir)
                                              : g_build_filename (argv[1], DDIM_ENCODER_DIR_NAME,
                                                                  NULL);
  if (wants_encoder && (encoder_dir || g_file_test (encoder_path, G_FILE_TEST_IS_DIR)))
    {
      encoder = ddim_encoder_load (encoder_path, model->weights_sha256, &error);
      if (encoder == NULL)
        return cli_error (CMD, error);
    }
  for (guint mi = 0; mi < methods->len; mi++)
    if (g_array_index (methods, DdimInversionMethod, mi) == DDIM_METHOD_ENCODER && !encoder)
      return cli_fail (CMD, "method encoder needs an encoder, and %s does not exist (train one "
                       "with 'ddim train-encoder %s', or pass --encoder DIR)", encoder_path,
                       argv[1]);
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  gsize n = (gsize) c->in_channels * h * w;
  g_autofree float *rec = g_new (float, n);
  if (save_dir)
    {
      if (g_mkdir_with_parents (save_dir, 0755) != 0)
        return cli_fail (CMD, "cannot create %s: %s", save_dir, g_strerror (errno));
      for (guint k = 0; k < images->len; k++)
        if (!save_png (save_dir, "original", k, c->in_channels, h, w, images->pdata[k], &error))
          return cli_error (CMD, error);
    }

  DdimExactOptions exact;
  DdimOptimizeOptions optimize;
  ddim_exact_options_init (&exact);
  ddim_optimize_options_init (&optimize);
  optimize.iterations = iters;
  optimize.learning_rate = lr;
  optimize.init = DDIM_OPTIMIZE_INIT_NOISE;
  exact.optimize = &optimize;
  exact.encoder = encoder;
  if (encoder)
    printf ("# %u images; encoder %s (trained for %d steps, %s spacing)\n", images->len,
            encoder_path, ddim_encoder_get_steps (encoder),
            ddim_spacing_to_string (ddim_encoder_get_spacing (encoder)));
  else
    printf ("# %u images\n", images->len);

  printf ("%-12s %6s %9s %8s %12s %10s\n", "method", "steps", "PSNR dB", "std", "evals/image",
          "s/image");
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  cli_sigint_install (CMD);
  for (guint mi = 0; mi < methods->len; mi++)
    for (guint si = 0; si < steps->len; si++)
      {
        DdimInversionMethod m = g_array_index (methods, DdimInversionMethod, mi);
        DdimRunOptions o;
        ddim_run_options_init (&o, model->schedule);
        o.steps = g_array_index (steps, int, si);
        o.cancellable = cancellable;
        if (eps_at_str && !ddim_eps_at_from_string (eps_at_str, &o.eps_at, &error))
          return cli_usage_error (CMD, "--eps-at: %s", error->message);
        if (m == DDIM_METHOD_ENCODER)
          {
            o.spacing = ddim_encoder_get_spacing (encoder);
            if (o.steps != ddim_encoder_get_steps (encoder))
              {
                printf ("%-12s %6d   (skipped: the encoder inverts %d steps only)\n",
                        ddim_inversion_method_to_string (m), o.steps,
                        ddim_encoder_get_steps (encoder));
                continue;
              }
          }
        optimize.cancellable = cancellable;
        double sum = 0, sum2 = 0;
        int finite = 0, inf_count = 0;
        DdimExactStats stats = { 0 };
        gint64 t0 = g_get_monotonic_time ();
        for (guint k = 0; k < images->len; k++)
          {
            if (cli_sigint_received ())
              g_cancellable_cancel (cancellable);
            const float *x0 = images->pdata[k];
            g_autoptr (DdimLatent) l = ddim_invert_with_method (model->unet, model->schedule, x0,
                                                                h, w, m, &exact, &o, &stats,
                                                                &error);
            if (l == NULL || !ddim_reconstruct_latent (model->unet, model->schedule, l, rec, &o,
                                                       &stats, &error))
              {
                cli_sigint_restore ();
                return cli_error (CMD, error);
              }
            if (save_dir)
              {
                g_autofree char *prefix = g_strdup_printf ("%s-%d",
                                                           ddim_inversion_method_to_string (m),
                                                           o.steps);
                if (!save_png (save_dir, prefix, k, c->in_channels, h, w, rec, &error))
                  {
                    cli_sigint_restore ();
                    return cli_error (CMD, error);
                  }
              }
            double p = ddim_psnr (rec, x0, n);
            if (isinf (p))
              inf_count++;
            else
              {
                sum += p;
                sum2 += p * p;
                finite++;
              }
          }
        double secs = (g_get_monotonic_time () - t0) / 1e6 / images->len;
        double mean = finite ? sum / finite : INFINITY;
        double sd = finite > 1 ? sqrt (MAX (0, (sum2 - sum * sum / finite) / (finite - 1))) : 0;
        printf ("%-12s %6d %9.2f %8.2f %12.1f %10.3f%s\n", ddim_inversion_method_to_string (m),
                o.steps, mean, sd, (double) stats.model_evals / images->len, secs,
                inf_count ? " (some exact)" : "");
        fflush (stdout);
      }
  cli_sigint_restore ();
  return CLI_EXIT_OK;
}
