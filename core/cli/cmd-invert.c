/* ddim invert MODEL INPUT -o LATENT.safetensors: DDIM inversion. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ddim/image.h"
#include "ddim/latent.h"
#include "ddim/encoder.h"
#include "ddim/exact.h"
#include "ddim/optimize.h"
#include "ddim/safetensors.h"
#include "progress.h"

#define CMD "invert"

typedef struct {
  int    height, width;              /* of x0 */
  int    image_width, image_height;  /* the source's own size */
  const char *resize;                /* "fit" or "native" */
  float *x0;                         /* C*H*W, owned */
} Source;

static void
source_clear (Source *src)
{
  g_clear_pointer (&src->x0, g_free);
}

/* A safetensors file with 'x0' [1, C, H, W], used as is. */
static gboolean
load_tensor_source (DdimModel *model, const char *path, Source *src, GError **error)
{
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, error);
  if (st == NULL)
    return FALSE;
  const DdimTensorInfo *info = ddim_safetensors_lookup (st, "x0");
  if (info == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "%s has no tensor 'x0' (expected x0 [1, %d, H, W])", path, c->in_channels);
      return FALSE;
    }
  if (info->ndim != 4 || info->shape[0] != 1 || info->shape[1] != c->in_channels
      || info->shape[2] < 1 || info->shape[3] < 1 || info->shape[2] > G_MAXINT
      || info->shape[3] > G_MAXINT)
    {
      GString *shape = g_string_new ("[");
      for (int d = 0; d < info->ndim; d++)
        g_string_append_printf (shape, "%s%" G_GINT64_FORMAT, d ? ", " : "", info->shape[d]);
      g_string_append_c (shape, ']');
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "tensor 'x0' in %s has shape %s; expected [1, %d, H, W] (one image with "
                   "the model's %d channel%s)", path, shape->str, c->in_channels,
                   c->in_channels, c->in_channels == 1 ? "" : "s");
      g_string_free (shape, TRUE);
      return FALSE;
    }
  src->height = (int) info->shape[2];
  src->width = (int) info->shape[3];
  if (!ddim_unet_check_size (model->unet, src->height, src->width, error))
    return FALSE;
  src->x0 = ddim_safetensors_read_f32 (st, "x0", 4, info->shape, error);
  if (src->x0 == NULL)
    return FALSE;
  src->image_width = src->width;
  src->image_height = src->height;
  src->resize = "native";
  return TRUE;
}

static gboolean
load_image_source (DdimModel *model, const char *path, gboolean native, Source *src,
                   GError **error)
{
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  g_autoptr (DdimImage) img = ddim_image_load (path, c->in_channels, 0, 0, error);
  if (img == NULL)
    return FALSE;
  src->image_width = img->width;
  src->image_height = img->height;
  if (native)
    {
      g_autoptr (GError) sub = NULL;
      if (!ddim_unet_check_size (model->unet, img->height, img->width, &sub))
        {
          int f = ddim_unet_config_size_factor (c);
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                       "%s is %dx%d; with --native its width and height must be multiples "
                       "of %d for this model (crop or pad it, or leave out --native to "
                       "resize it to %dx%d)", path, img->width, img->height, f,
                       c->sample_size, c->sample_size);
          return FALSE;
        }
      src->resize = "native";
    }
  else
    {
      src->resize = "fit";
      if (img->width != c->sample_size || img->height != c->sample_size)
        {
          ddim_image_free (g_steal_pointer (&img));
          img = ddim_image_load (path, c->in_channels, c->sample_size, c->sample_size, error);
          if (img == NULL)
            return FALSE;
        }
    }
  src->width = img->width;
  src->height = img->height;
  src->x0 = g_steal_pointer (&img->data);
  return TRUE;
}

typedef struct {
  DdimModel          *model;
  const Source       *src;
  DdimInversionMethod method;
  DdimExactOptions   *exact;
  DdimOptimizeOptions *optimize;
  DdimExactStats      stats;
  DdimLatent         *latent;   /* result */
  gboolean            quiet;
} InvertJob;

/* Optimisation progress: iteration, loss and PSNR, about ten lines. */
static void
on_iteration (int it, int total, double mse, double psnr, gpointer data)
{
  InvertJob *job = data;
  if (cli_sigint_received () && job->optimize->cancellable)
    g_cancellable_cancel (job->optimize->cancellable);
  if (job->quiet)
    return;
  if (total <= 10 || it == total || (it * 10 / total) != ((it - 1) * 10 / total))
    fprintf (stderr, "invert: iteration %d/%d  loss %.6f  PSNR %.2f dB\n", it, total, mse, psnr);
}

static gboolean
run_invert (gpointer data, DdimRunOptions *options, GError **error)
{
  InvertJob *job = data;
  job->optimize->cancellable = options->cancellable;
  job->latent = ddim_invert_with_method (job->model->unet, job->model->schedule, job->src->x0,
                                         job->src->height, job->src->width, job->method,
                                         job->exact, options, &job->stats, error);
  return job->latent != NULL;
}

/* Forward passes of an inversion, counting a VJP as three (its forward
 * with the tape and a backward about twice as long); for fixed-point an
 * upper bound. 0 for the encoder (no model evaluation). */
static double
invert_evaluations (DdimInversionMethod method, int steps, const DdimExactOptions *exact,
                    const DdimOptimizeOptions *optimize, gboolean have_encoder)
{
  switch (method)
    {
    case DDIM_METHOD_FIXED_POINT:
      return (double) steps * exact->fp_max_iterations;
    case DDIM_METHOD_EDICT:
      return 2.0 * steps;
    case DDIM_METHOD_OPTIMIZE:
    case DDIM_METHOD_HYBRID:
      /* Each iteration decodes through all steps and back. */
      return (double) optimize->iterations * steps * (1 + 3)
             + (method == DDIM_METHOD_HYBRID && !have_encoder ? steps : 0);
    case DDIM_METHOD_ENCODER:
      return 0;
    case DDIM_METHOD_DDIM:
    case DDIM_METHOD_BDIA:
    default:
      return steps;
    }
}

int
cli_cmd_invert (int argc, char **argv)
{
  g_autofree char *output = NULL;
  g_autofree char *spacing_str = NULL;
  g_autofree char *eps_at_str = NULL;
  g_autofree char *method_str = NULL;
  g_autofree char *init_str = NULL;
  g_autofree char *encoder_dir = NULL;
  int steps = -1;
  double edict_p = DDIM_EDICT_P_DEFAULT, bdia_gamma = DDIM_BDIA_GAMMA_DEFAULT;
  /* --iters, --lr and --prior write into it: they start at the library's
   * defaults, so any value given is checked below. */
  DdimOptimizeOptions optimize;
  ddim_optimize_options_init (&optimize);
  optimize.init = DDIM_OPTIMIZE_INIT_NOISE;
  gboolean native = FALSE, quiet = FALSE;
  DdimRunOptions defaults;
  ddim_run_options_init (&defaults, NULL);
  g_autofree char *eps_at_help = g_strdup_printf (
      "Where each inversion step evaluates the noise prediction: current (the step's "
      "starting timestep, as diffusers' DDIMInverseScheduler pipelines and ermongroup/ddim) "
      "or target (the timestep moved to); default %s",
      ddim_eps_at_to_string (defaults.eps_at));
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Latent file to write (required), e.g. LATENT.safetensors", "FILE" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps,
      "Number of DDIM steps (default 50, or the encoder's with --method encoder or hybrid)",
      "N" },
    { "spacing", 0, 0, G_OPTION_ARG_STRING, &spacing_str,
      "Timestep spacing: leading, trailing or linspace (default: the scheduler config's)",
      "SPACING" },
    { "eps-at", 0, 0, G_OPTION_ARG_STRING, &eps_at_str, eps_at_help, "current|target" },
    { "method", 0, 0, G_OPTION_ARG_STRING, &method_str,
      "Inversion method: ddim (default), fixed-point, edict, bdia, optimize (gradient descent "
      "through the sampling chain), hybrid (optimize from the encoder's output, or from the "
      "DDIM inversion without an encoder) or encoder (one pass of the learned encoder)",
      "METHOD" },
    { "encoder", 0, 0, G_OPTION_ARG_FILENAME, &encoder_dir,
      "encoder/hybrid: the encoder folder (default MODEL/encoder when it exists)", "DIR" },
    { "iters", 0, 0, G_OPTION_ARG_INT, &optimize.iterations,
      "optimize/hybrid: iterations (default 100)", "N" },
    { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &optimize.learning_rate,
      "optimize/hybrid: Adam step size (default 0.01)", "LR" },
    { "prior", 0, 0, G_OPTION_ARG_DOUBLE, &optimize.prior_weight,
      "optimize/hybrid: weight of the Gaussian-shell prior on the latent (default 0.01)", "W" },
    { "init", 0, 0, G_OPTION_ARG_STRING, &init_str,
      "optimize: start from zero or noise (default noise)", "zero|noise" },
    { "edict-p", 0, 0, G_OPTION_ARG_DOUBLE, &edict_p, "edict: mixing weight p (default 0.93)",
      "P" },
    { "bdia-gamma", 0, 0, G_OPTION_ARG_DOUBLE, &bdia_gamma, "bdia: gamma (default 0.96)", "G" },
    { "native", 0, 0, G_OPTION_ARG_NONE, &native,
      "Keep the image at its own size (width and height must be multiples of the model's "
      "size factor) instead of resizing it to the model's sample_size (a .safetensors "
      "INPUT is always used at its own size)", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL] INPUT");
  g_option_context_set_summary (ctx,
      "Inverts an image: maps x0 to the latent that 'ddim reconstruct' turns back\n"
      "into it. --method ddim is plain DDIM inversion; fixed-point solves each\n"
      "inverse step exactly (AIDI/ReNoise); edict and bdia store a pair of states\n"
      "and invert exactly up to float round-off; optimize descends the\n"
      "reconstruction error through all K sampling steps (--iters, --lr, --prior);\n"
      "encoder is one pass of the model's learned encoder ('ddim train-encoder',\n"
      "MODEL/encoder or --encoder), and hybrid starts the optimisation from it (from\n"
      "the DDIM inversion when there is none). INPUT is an image file (PNG, JPEG,\n"
      "...; converted to the model's channels, and resized to sample_size x\n"
      "sample_size, aspect ratio not kept, unless --native) or a .safetensors file\n"
      "with 'x0' [1, C, H, W] in [-1, 1], used as is. The latent file records the\n"
      "model's weights SHA-256, steps, spacing, eps-at and the source's own size.\n"
      "Ctrl-C stops after the current step and writes nothing (exit status 130).");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (CMD, 1, &argc, &argv, &args, &rc))
    return rc;
  if (argc < 3)
    return cli_usage_error (CMD, "missing INPUT (an image or a .safetensors file)");
  if (argc > 3)
    return cli_usage_error (CMD, "too many arguments");
  if (output == NULL)
    return cli_usage_error (CMD, "missing -o LATENT.safetensors");
  if (steps != -1 && !cli_check_range (CMD, "--steps", steps, 1, G_MAXINT, &rc))
    return rc;
  DdimSpacing spacing = DDIM_SPACING_LEADING;
  DdimEpsAt eps_at = defaults.eps_at;
  {
    g_autoptr (GError) e = NULL;
    if (spacing_str && !ddim_spacing_from_string (spacing_str, &spacing, &e))
      return cli_usage_error (CMD, "--spacing: %s", e->message);
    if (eps_at_str && !ddim_eps_at_from_string (eps_at_str, &eps_at, &e))
      return cli_usage_error (CMD, "--eps-at: %s", e->message);
  }
  DdimInversionMethod method = DDIM_METHOD_DDIM;
  DdimExactOptions exact;
  ddim_exact_options_init (&exact);
  exact.edict_p = edict_p;
  exact.bdia_gamma = bdia_gamma;
  exact.optimize = &optimize;
  {
    g_autoptr (GError) e = NULL;
    if (method_str && !ddim_inversion_method_from_string (method_str, &method, &e))
      return cli_usage_error (CMD, "--method: %s", e->message);
    if (!ddim_exact_options_check (&exact, &e))
      return cli_usage_error (CMD, "%s", e->message);
  }
  if (init_str)
    {
      if (g_str_equal (init_str, "zero"))
        optimize.init = DDIM_OPTIMIZE_INIT_ZERO;
      else if (g_str_equal (init_str, "noise"))
        optimize.init = DDIM_OPTIMIZE_INIT_NOISE;
      else
        return cli_usage_error (CMD, "--init must be zero or noise, not '%s'", init_str);
    }
  if (!cli_check_range (CMD, "--iters", optimize.iterations, 0, 1000000, &rc))
    return rc;
  if (!(optimize.learning_rate > 0) || !(optimize.prior_weight >= 0))
    return cli_usage_error (CMD, "--lr must be > 0 and --prior >= 0");
  const char *input = argv[2];
  gboolean tensor_input = cli_has_suffix (input, ".safetensors");

  if (encoder_dir && method != DDIM_METHOD_ENCODER && method != DDIM_METHOD_HYBRID)
    return cli_usage_error (CMD, "--encoder goes with --method encoder or hybrid");

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimEncoder) encoder = NULL;
  g_autofree char *encoder_path = NULL;
  if (method == DDIM_METHOD_ENCODER || method == DDIM_METHOD_HYBRID)
    {
      encoder_path = encoder_dir ? g_strdup (encoder_dir)
                                 : g_build_filename (argv[1], DDIM_ENCODER_DIR_NAME, NULL);
      if (encoder_dir || g_file_test (encoder_path, G_FILE_TEST_IS_DIR))
        {
          encoder = ddim_encoder_load (encoder_path, model->weights_sha256, &error);
          if (encoder == NULL)
            return cli_error (CMD, error);
        }
      else if (method == DDIM_METHOD_ENCODER)
        return cli_fail (CMD, "method encoder needs an encoder, and %s does not exist (train "
                         "one with 'ddim train-encoder %s', or pass --encoder DIR)",
                         encoder_path, argv[1]);
    }
  /* The encoder inverts the decoding it was trained for. */
  if (steps == -1)
    steps = encoder ? ddim_encoder_get_steps (encoder) : 50;
  if (encoder && spacing_str == NULL)
    {
      spacing = ddim_encoder_get_spacing (encoder);
      spacing_str = g_strdup (ddim_spacing_to_string (spacing));
    }
  exact.encoder = encoder;
  if (steps > model->schedule->num_train_timesteps)
    return cli_usage_error (CMD, "--steps must be between 1 and %d (the model's training "
                            "timesteps), not %d", model->schedule->num_train_timesteps, steps);

  Source src = { 0 };
  gboolean loaded = tensor_input ? load_tensor_source (model, input, &src, &error)
                                 : load_image_source (model, input, native, &src, &error);
  if (!loaded)
    {
      source_clear (&src);
      return cli_error (CMD, error);
    }

  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = steps;
  if (spacing_str)
    o.spacing = spacing;
  if (eps_at_str)
    o.eps_at = eps_at;

  InvertJob job = { model, &src, method, &exact, &optimize, { 0 }, NULL, quiet };
  optimize.progress = on_iteration;
  optimize.progress_data = &job;
  gboolean iterative = method == DDIM_METHOD_OPTIMIZE || method == DDIM_METHOD_HYBRID;
  /* The optimisation reports iterations itself; the step bar would only
   * show its DDIM start (none from an encoder). */
  double estimate = cli_estimate_run (CMD, model->unet, src.height, src.width,
                                      invert_evaluations (method, steps, &exact, &optimize,
                                                          encoder != NULL),
                                      method == DDIM_METHOD_FIXED_POINT, quiet);
  rc = cli_run_with_estimate (CMD, CMD, run_invert, &job, &o,
                              quiet || (iterative
                                        && (method != DDIM_METHOD_HYBRID || encoder != NULL)),
                              estimate);
  g_autoptr (DdimLatent) latent = job.latent;
  source_clear (&src);
  if (rc != CLI_EXIT_OK)
    return rc;

  latent->model_sha256 = g_strdup (model->weights_sha256);
  latent->image_width = src.image_width;
  latent->image_height = src.image_height;
  g_free (latent->resize);
  latent->resize = g_strdup (src.resize);
  if (!quiet && encoder)
    fprintf (stderr, "invert: method %s (encoder %s), %d model evaluations\n",
             ddim_inversion_method_to_string (method), encoder_path, job.stats.model_evals);
  else if (!quiet)
    fprintf (stderr, "invert: method %s, %d model evaluations\n",
             ddim_inversion_method_to_string (method), job.stats.model_evals);

  if (!ddim_latent_save (latent, output, &error))
    return cli_error (CMD, error);
  return CLI_EXIT_OK;
}
