/* ddim sample MODEL -o OUT: DDIM sampling from seeded noise or from a
 * given x_T. */
#include <math.h>
#include <stdio.h>

#include "cli.h"
#include "ddim/safetensors.h"

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

/* The starting noise of --noise: tensor "x_T" (else "latent", as 'ddim
 * invert' writes it) [n, C, H, W] of FILE, checked against the model. */
typedef struct {
  float *x;          /* n * C * H * W floats, owned */
  int    n, height, width;
} Noise;

static gboolean
noise_load (const char *path, DdimUNet *unet, Noise *noise, GError **error)
{
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, error);
  if (st == NULL)
    return FALSE;
  const char *names[] = { "x_T", "latent" };
  const DdimTensorInfo *info = NULL;
  for (gsize i = 0; i < G_N_ELEMENTS (names) && info == NULL; i++)
    info = ddim_safetensors_lookup (st, names[i]);
  if (info == NULL)
    {
      g_autoptr (GString) found = g_string_new (NULL);
      for (guint i = 0; i < ddim_safetensors_get_n_tensors (st); i++)
        g_string_append_printf (found, "%s'%s'", i ? ", " : "",
                                ddim_safetensors_get_info_nth (st, i)->name);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "--noise %s has no tensor 'x_T' or 'latent' (it has %s)", path,
                   found->len ? found->str : "none");
      return FALSE;
    }
  g_autoptr (GString) shape = g_string_new ("[");
  for (int d = 0; d < info->ndim; d++)
    g_string_append_printf (shape, "%s%" G_GINT64_FORMAT, d ? ", " : "", info->shape[d]);
  g_string_append_c (shape, ']');
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  if (info->ndim != 4)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "--noise %s: tensor '%s' has shape %s, rank %d; expected rank 4 "
                   "[n, %d, H, W]", path, info->name, shape->str, info->ndim, c->in_channels);
      return FALSE;
    }
  const gint64 *sh = info->shape;
  if (sh[1] != c->in_channels)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "--noise %s: tensor '%s' has shape %s, %" G_GINT64_FORMAT " channels; the "
                   "model takes %d", path, info->name, shape->str, sh[1], c->in_channels);
      return FALSE;
    }
  if (sh[0] < 1 || sh[0] > MAX_COUNT || sh[2] < 1 || sh[2] > 65536 || sh[3] < 1
      || sh[3] > 65536)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "--noise %s: tensor '%s' has shape %s; expected 1 to %d images of at most "
                   "65536 x 65536 pixels", path, info->name, shape->str, MAX_COUNT);
      return FALSE;
    }
  g_autoptr (GError) local = NULL;
  if (!ddim_unet_check_size (unet, (int) sh[2], (int) sh[3], &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH, "--noise %s: tensor '%s' has shape "
                   "%s: %s", path, info->name, shape->str, local->message);
      return FALSE;
    }
  g_autofree float *x = g_try_new (float, info->n_elements);
  if (x == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "--noise %s: out of memory for %s",
                   path, shape->str);
      return FALSE;
    }
  if (!ddim_tensor_info_to_f32 (info, x, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED, "--noise %s: %s", path,
                   local->message);
      return FALSE;
    }
  for (gint64 i = 0; i < info->n_elements; i++)
    if (!isfinite (x[i]))
      {
        g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                     "--noise %s: tensor '%s' holds a value that is not finite (%g at index %"
                     G_GINT64_FORMAT ")", path, info->name, x[i], i);
        return FALSE;
      }
  noise->x = g_steal_pointer (&x);
  noise->n = (int) sh[0];
  noise->height = (int) sh[2];
  noise->width = (int) sh[3];
  return TRUE;
}

int
cli_cmd_sample (int argc, char **argv)
{
  g_autofree char *output = NULL;
  g_autofree char *seed_str = NULL;
  g_autofree char *spacing_str = NULL;
  g_autofree char *count_str = NULL;
  g_autofree char *noise_path = NULL;
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
    { "n", 'n', 0, G_OPTION_ARG_STRING, &count_str,
      "Number of images (default 1, or the --noise file's)", "COUNT" },
    { "noise", 0, 0, G_OPTION_ARG_FILENAME, &noise_path,
      "Start from this x_T instead of seeded noise: a .safetensors file with a tensor "
      "'x_T' (or 'latent') [n, C, H, W]; it sets the count and the size", "FILE" },
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
      "[n, C, size, size] drawn with --seed, or from the x_T of --noise FILE. The\n"
      "same seed (or noise), steps, spacing and eta give the same images. Ctrl-C\n"
      "stops after the current step and writes nothing (exit status 130).");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  g_auto (GStrv) args = NULL;
  if (!cli_parse_model_only (ctx, CMD, &argc, &argv, &args, &rc))
    return rc;
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
  if (count_str)
    {
      gint64 v = 0;
      g_autoptr (GError) e = NULL;
      if (!g_ascii_string_to_signed (count_str, 10, G_MININT, G_MAXINT, &v, &e))
        return cli_usage_error (CMD, "--n: %s", e->message);
      count = (int) v;
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
  g_autoptr (GError) error = NULL;
  g_autofree float *x = NULL;
  int height, width;
  if (noise_path)
    {
      Noise noise = { 0 };
      if (!noise_load (noise_path, model->unet, &noise, &error))
        return cli_error (CMD, error);
      x = noise.x;
      height = noise.height;
      width = noise.width;
      if (count_str && count != noise.n)
        return cli_fail (CMD, "-n %d disagrees with --noise %s, which holds %d images",
                         count, noise_path, noise.n);
      if (size != 0 && (size != height || size != width))
        return cli_fail (CMD, "--size %d disagrees with --noise %s, whose images are %dx%d",
                         size, noise_path, width, height);
      count = noise.n;
    }
  else
    {
      if (size == 0)
        size = c->sample_size;
      if (!ddim_unet_check_size (model->unet, size, size, &error))
        return cli_error (CMD, error);
      height = width = size;
      gsize n_values = (gsize) count * c->in_channels * size * size;
      x = g_try_new (float, n_values);
      if (x == NULL)
        return cli_fail (CMD, "out of memory for %d images of %dx%d", count, size, size);
      ddim_randn (seed, x, n_values);
    }

  DdimRunOptions o;
  ddim_run_options_init (&o, s);
  o.steps = steps;
  if (spacing_str)
    o.spacing = spacing;
  o.eta = eta;
  o.seed = eta_seed (seed);
  o.clip_sample = clip ? TRUE : no_clip ? FALSE : s->clip_sample;

  rc = cli_run (CMD, CMD, ddim_sample, model, x, count, height, width, &o, quiet);
  if (rc != CLI_EXIT_OK)
    return rc;

  char seed_buf[32], steps_buf[16], eta_buf[32];
  g_snprintf (seed_buf, sizeof seed_buf, "%" G_GUINT64_FORMAT, seed);
  g_snprintf (steps_buf, sizeof steps_buf, "%d", o.steps);
  g_ascii_dtostr (eta_buf, sizeof eta_buf, o.eta);
  g_autofree char *noise_name = noise_path ? g_path_get_basename (noise_path) : NULL;
  const char *metadata[] = {
    "model_sha256", model->weights_sha256,
    "seed", seed_buf,   /* with --noise, of the eta > 0 noise only */
    "steps", steps_buf,
    "spacing", ddim_spacing_to_string (o.spacing),
    "eta", eta_buf,
    "clip_sample", o.clip_sample ? "true" : "false",
    noise_path ? "noise" : NULL, noise_name,
    NULL
  };
  if (!cli_save_images (output, kind, "x0", count, c->in_channels, height, width, x, metadata,
                        &error))
    return cli_error (CMD, error);
  return CLI_EXIT_OK;
}
