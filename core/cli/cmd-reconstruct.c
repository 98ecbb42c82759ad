/* ddim reconstruct MODEL LATENT -o OUT: decode a latent made by invert. */
#include <stdio.h>

#include "cli.h"
#include "ddim/exact.h"
#include "ddim/latent.h"
#include "progress.h"

#define CMD "reconstruct"

typedef struct {
  DdimModel  *model;
  DdimLatent *latent;
} ReconstructJob;

/* The decoder is chosen by the latent's method (DDIM for ddim, fixed-point,
 * optimize and hybrid latents; EDICT and BDIA their own); in place. */
static gboolean
run_reconstruct (gpointer data, DdimRunOptions *options, GError **error)
{
  ReconstructJob *job = data;
  return ddim_reconstruct_latent (job->model->unet, job->model->schedule, job->latent,
                                  job->latent->latent, options, NULL, error);
}

int
cli_cmd_reconstruct (int argc, char **argv)
{
  g_autofree char *output = NULL;
  gboolean quiet = FALSE;
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Output file (required): .png or .safetensors (tensor 'x0' [1, C, H, W] float32)",
      "FILE" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL] LATENT.safetensors");
  g_option_context_set_summary (ctx,
      "Runs deterministic DDIM sampling (eta 0, no clipping) from a latent written\n"
      "by 'ddim invert' with the same model, with the steps and spacing recorded in\n"
      "the latent file. The output has the latent's size: for an image that invert\n"
      "resized to the model's sample_size (resize \"fit\"), that is the model size,\n"
      "not the original image size (which is printed as a note).\n"
      "Ctrl-C stops after the current step and writes nothing (exit status 130).");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (CMD, 1, &argc, &argv, &args, &rc))
    return rc;
  if (argc < 3)
    return cli_usage_error (CMD, "missing LATENT file");
  if (argc > 3)
    return cli_usage_error (CMD, "too many arguments");
  if (output == NULL)
    return cli_usage_error (CMD, "missing -o OUT.png|OUT.safetensors");
  CliOutputKind kind;
  if (!cli_output_kind (CMD, output, &kind, &rc))
    return rc;

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);

  g_autoptr (GError) error = NULL;
  g_autoptr (DdimLatent) latent = ddim_latent_load (argv[2], model->weights_sha256, &error);
  if (latent == NULL)
    return cli_error (CMD, error);
  if (latent->channels != c->in_channels)
    return cli_fail (CMD, "the latent has %d channels; the model takes %d", latent->channels,
                     c->in_channels);
  if (!ddim_unet_check_size (model->unet, latent->height, latent->width, &error))
    return cli_error (CMD, error);
  if (latent->steps > model->schedule->num_train_timesteps)
    return cli_fail (CMD, "the latent was made with %d steps; this model has only %d "
                     "training timesteps", latent->steps, model->schedule->num_train_timesteps);

  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = latent->steps;
  o.spacing = latent->spacing;
  o.eta = 0;
  o.clip_sample = FALSE;

  ReconstructJob job = { model, latent };
  /* EDICT's decoder evaluates the model twice per step. */
  double evaluations = (double) o.steps * (g_strcmp0 (latent->method, "edict") == 0 ? 2 : 1);
  double estimate = cli_estimate_run (CMD, model->unet, latent->height, latent->width,
                                      evaluations, FALSE, quiet);
  rc = cli_run_with_estimate (CMD, CMD, run_reconstruct, &job, &o, quiet, estimate);
  if (rc != CLI_EXIT_OK)
    return rc;

  char steps_buf[16];
  g_snprintf (steps_buf, sizeof steps_buf, "%d", o.steps);
  const char *metadata[] = {
    "model_sha256", model->weights_sha256,
    "steps", steps_buf,
    "spacing", ddim_spacing_to_string (o.spacing),
    NULL
  };
  if (!cli_save_images (output, kind, "x0", 1, c->out_channels, latent->height, latent->width,
                        latent->latent, metadata, &error))
    return cli_error (CMD, error);
  if (!quiet && (latent->image_width != latent->width || latent->image_height != latent->height))
    fprintf (stderr, "ddim %s: note: the source image was %dx%d; it was resized (%s) to %dx%d, the "
             "size written\n", CMD, latent->image_width, latent->image_height, latent->resize,
             latent->width, latent->height);
  return CLI_EXIT_OK;
}
