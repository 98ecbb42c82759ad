/* ddim sample MODEL -o OUT: DDIM sampling from seeded noise. */
#include <math.h>
#include <stdio.h>

#include "cli.h"

#define CMD "sample"
#define MAX_COUNT 1024

/* The seed of the eta > 0 noise, kept apart from the x_T stream (the
 * library draws step i's noise with seed + i * 0x100000001b3, so passing
 * the x_T seed itself would reuse x_T as the first step's noise). */
static guint64
eta_seed (guint64 seed)
{
  guint64 z = seed ^ 0x6a09e667f3bcc909ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int
cli_cmd_sample (int argc, char **argv)
{
  g_autofree char *output = NULL;
  g_autofree char *seed_str = NULL;
  g_autofree char *spacing_str = NULL;
  int steps = 50, count = 1, size = 0;
  double eta = 0;
  gboolean clip = FALSE, no_clip = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Output file (required): .png (a grid when --n > 1) or .safetensors (tensor "
      "'x0' [n, C, H, W] float32)", "FILE" },
    { "seed", 0, 0, G_OPTION_ARG_STRING, &seed_str,
      "Seed of the starting noise x_T (0 .. 2^64-1, default 0)", "S" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps, "Number of DDIM steps (default 50)", "N" },
    { "eta", 0, 0, G_OPTION_ARG_DOUBLE, &eta,
      "Stochasticity: 0 = deterministic DDIM (default), 1 = DDPM-like", "E" },
    { "n", 'n', 0, G_OPTION_ARG_INT, &count, "Number of images (default 1)", "COUNT" },
    { "spacing", 0, 0, G_OPTION_ARG_STRING, &spacing_str,
      "Timestep spacing: leading, trailing or linspace (default: the scheduler config's)",
      "SPACING" },
    { "clip", 0, 0, G_OPTION_ARG_NONE, &clip,
      "Clip the predicted x0 to the clip range (default: the scheduler config's clip_sample)",
      NULL },
    { "no-clip", 0, 0, G_OPTION_ARG_NONE, &no_clip, "Do not clip the predicted x0", NULL },
    { "size", 0, 0, G_OPTION_ARG_INT, &size,
      "Image height and width in pixels (default: the model's sample_size); must be a "
      "multiple of the model's size factor (see 'ddim info')", "PX" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL]");
  g_option_context_set_summary (ctx,
      "Generates images with DDIM from standard normal noise x_T of shape\n"
      "[n, C, size, size] drawn with --seed. The same seed, steps, spacing and eta\n"
      "give the same images. Ctrl-C stops after the current step and writes nothing\n"
      "(exit status 130).");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (CMD, 0, &argc, &argv, &args, &rc))
    return rc;
  if (argc != 2)
    return cli_usage_error (CMD, "too many arguments");
  if (output == NULL)
    return cli_usage_error (CMD, "missing -o OUT.png|OUT.safetensors");
  CliOutputKind kind;
  if (!cli_output_kind (CMD, output, &kind, &rc))
    return rc;

  guint64 seed = 0;
  if (seed_str)
    {
      g_autoptr (GError) e = NULL;
      if (!g_ascii_string_to_unsigned (seed_str, 10, 0, G_MAXUINT64, &seed, &e))
        return cli_usage_error (CMD, "--seed: %s", e->message);
    }
  if (!cli_check_range (CMD, "--steps", steps, 1, G_MAXINT, &rc)
      || !cli_check_range (CMD, "--n", count, 1, MAX_COUNT, &rc))
    return rc;
  if (size != 0 && !cli_check_range (CMD, "--size", size, 1, 65536, &rc))
    return rc;
  if (!isfinite (eta) || eta < 0)
    return cli_usage_error (CMD, "--eta must be a number >= 0, not %g", eta);
  if (clip && no_clip)
    return cli_usage_error (CMD, "--clip and --no-clip exclude each other");
  DdimSpacing spacing = DDIM_SPACING_LEADING;
  if (spacing_str)
    {
      g_autoptr (GError) e = NULL;
      if (!ddim_spacing_from_string (spacing_str, &spacing, &e))
        return cli_usage_error (CMD, "--spacing: %s", e->message);
    }

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  const DdimSchedule *s = model->schedule;
  if (steps > s->num_train_timesteps)
    return cli_usage_error (CMD, "--steps must be between 1 and %d (the model's training "
                            "timesteps), not %d", s->num_train_timesteps, steps);
  if (size == 0)
    size = c->sample_size;
  g_autoptr (GError) error = NULL;
  if (!ddim_unet_check_size (model->unet, size, size, &error))
    return cli_error (CMD, error);

  DdimRunOptions o;
  ddim_run_options_init (&o, s);
  o.steps = steps;
  if (spacing_str)
    o.spacing = spacing;
  o.eta = eta;
  o.seed = eta_seed (seed);
  o.clip_sample = clip ? TRUE : no_clip ? FALSE : s->clip_sample;

  gsize n_values = (gsize) count * c->in_channels * size * size;
  g_autofree float *x = g_try_new (float, n_values);
  if (x == NULL)
    return cli_fail (CMD, "out of memory for %d images of %dx%d", count, size, size);
  ddim_randn (seed, x, n_values);

  rc = cli_run (CMD, CMD, ddim_sample, model, x, count, size, size, &o, quiet);
  if (rc != CLI_EXIT_OK)
    return rc;

  char seed_buf[32], steps_buf[16], eta_buf[32];
  g_snprintf (seed_buf, sizeof seed_buf, "%" G_GUINT64_FORMAT, seed);
  g_snprintf (steps_buf, sizeof steps_buf, "%d", o.steps);
  g_ascii_dtostr (eta_buf, sizeof eta_buf, o.eta);
  const char *metadata[] = {
    "model_sha256", model->weights_sha256,
    "seed", seed_buf,
    "steps", steps_buf,
    "spacing", ddim_spacing_to_string (o.spacing),
    "eta", eta_buf,
    "clip_sample", o.clip_sample ? "true" : "false",
    NULL
  };
  if (!cli_save_images (output, kind, "x0", count, c->out_channels, size, size, x, metadata,
                        &error))
    return cli_error (CMD, error);
  return CLI_EXIT_OK;
}
