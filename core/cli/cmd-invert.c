/* ddim invert MODEL INPUT -o LATENT.safetensors: DDIM inversion. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ddim/image.h"
#include "ddim/latent.h"
#include "ddim/safetensors.h"

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

int
cli_cmd_invert (int argc, char **argv)
{
  g_autofree char *output = NULL;
  g_autofree char *spacing_str = NULL;
  g_autofree char *eps_at_str = NULL;
  int steps = 50;
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
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps, "Number of DDIM steps (default 50)", "N" },
    { "spacing", 0, 0, G_OPTION_ARG_STRING, &spacing_str,
      "Timestep spacing: leading, trailing or linspace (default: the scheduler config's)",
      "SPACING" },
    { "eps-at", 0, 0, G_OPTION_ARG_STRING, &eps_at_str, eps_at_help, "current|target" },
    { "native", 0, 0, G_OPTION_ARG_NONE, &native,
      "Keep the image at its own size (width and height must be multiples of the model's "
      "size factor) instead of resizing it to the model's sample_size (a .safetensors "
      "INPUT is always used at its own size)", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("MODEL INPUT");
  g_option_context_set_summary (ctx,
      "Runs DDIM inversion: maps an image x0 to the noise x_T that DDIM sampling\n"
      "('ddim reconstruct') turns back into it. INPUT is an image file (PNG, JPEG,\n"
      "...; converted to the model's channels, and resized to sample_size x\n"
      "sample_size, aspect ratio not kept, unless --native) or a .safetensors file\n"
      "with 'x0' [1, C, H, W] in [-1, 1], used as is. The latent file records the\n"
      "model's weights SHA-256, steps, spacing, eps-at and the source's own size.\n"
      "Ctrl-C stops after the current step and writes nothing (exit status 130).");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  if (argc < 3)
    return cli_usage_error (CMD, argc < 2 ? "missing MODEL folder and INPUT"
                                          : "missing INPUT (an image or a .safetensors file)");
  if (argc > 3)
    return cli_usage_error (CMD, "too many arguments");
  if (output == NULL)
    return cli_usage_error (CMD, "missing -o LATENT.safetensors");
  if (!cli_check_range (CMD, "--steps", steps, 1, G_MAXINT, &rc))
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
  const char *input = argv[2];
  gboolean tensor_input = cli_has_suffix (input, ".safetensors");

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  if (steps > model->schedule->num_train_timesteps)
    return cli_usage_error (CMD, "--steps must be between 1 and %d (the model's training "
                            "timesteps), not %d", model->schedule->num_train_timesteps, steps);

  g_autoptr (GError) error = NULL;
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

  rc = cli_run (CMD, CMD, ddim_invert, model, src.x0, 1, src.height, src.width, &o, quiet);
  if (rc != CLI_EXIT_OK)
    {
      source_clear (&src);
      return rc;
    }

  g_autoptr (DdimLatent) latent = ddim_latent_new (c->in_channels, src.height, src.width);
  g_free (latent->latent);
  latent->latent = g_steal_pointer (&src.x0);
  latent->model_sha256 = g_strdup (model->weights_sha256);
  latent->steps = o.steps;
  latent->spacing = o.spacing;
  g_free (latent->method);
  latent->method = g_strdup ("ddim");
  latent->eps_at = o.eps_at;
  latent->image_width = src.image_width;
  latent->image_height = src.image_height;
  g_free (latent->resize);
  latent->resize = g_strdup (src.resize);
  source_clear (&src);

  if (!ddim_latent_save (latent, output, &error))
    return cli_error (CMD, error);
  return CLI_EXIT_OK;
}
