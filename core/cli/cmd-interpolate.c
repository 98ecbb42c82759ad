/* ddim interpolate MODEL A B -n N -o GRID.png: frames between two images
 * through their latents. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ddim/image.h"
#include "ddim/interpolate.h"
#include "ddim/safetensors.h"
#include "progress.h"

#define CMD "interpolate"

typedef struct {
  DdimModel              *model;
  const float            *a, *b;
  int                     height, width, n;
  DdimInterpolateOptions  options;
  float                  *frames;
} InterpJob;

static gboolean
interp_job (gpointer data, DdimProgressFunc progress, gpointer progress_data,
            GCancellable *cancellable, GError **error)
{
  InterpJob *j = data;
  j->options.run.progress = progress;
  j->options.run.progress_data = progress_data;
  j->options.run.cancellable = cancellable;
  return ddim_interpolate (j->model->unet, j->model->schedule, j->a, j->b, j->height, j->width,
                           j->n, &j->options, NULL, j->frames, error);
}

/* Whether @path is a latent file (tensor 'latent'); errors are left for
 * cli_source_load to report. */
static gboolean
is_latent_file (const char *path)
{
  if (!cli_has_suffix (path, ".safetensors"))
    return FALSE;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, NULL);
  return st != NULL && ddim_safetensors_lookup (st, "latent") != NULL;
}

int
cli_cmd_interpolate (int argc, char **argv)
{
  g_autofree char *output = NULL, *spacing = NULL, *eps_at = NULL;
  int n = 8, steps = 0, t_edit = -1, columns = 0;
  gboolean hspace = FALSE, native = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
    { "frames", 'n', 0, G_OPTION_ARG_INT, &n, "Number of frames, ends included (default 8)",
      "N" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Output file (required): a .png grid or .safetensors (tensor 'x0' [N, C, H, W])", "FILE" },
    { "columns", 0, 0, G_OPTION_ARG_INT, &columns,
      "Columns of the PNG grid (default: all frames in one row)", "C" },
    { "hspace", 0, 0, G_OPTION_ARG_NONE, &hspace,
      "Interpolate h (the mid-block output) between the two trajectories as well", NULL },
    { "t-edit", 't', 0, G_OPTION_ARG_INT, &t_edit,
      "With --hspace: interpolate h for the steps with t >= T (default T/2 of training)", "T" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps,
      "DDIM steps for inverting images (default 50, or the latents' own)", "N" },
    { "spacing", 0, 0, G_OPTION_ARG_STRING, &spacing,
      "Timestep spacing for inverting images: leading, trailing or linspace", "SPACING" },
    { "eps-at", 0, 0, G_OPTION_ARG_STRING, &eps_at,
      "Where inversion evaluates the noise prediction: current or target", "current|target" },
    { "native", 0, 0, G_OPTION_ARG_NONE, &native,
      "Keep images at their own size instead of resizing them to the model's sample_size",
      NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL] A B");
  g_option_context_set_summary (ctx,
      "Decodes N frames between A and B, each an image (inverted first) or a latent\n"
      "from 'ddim invert': spherical interpolation of the latents x_T (DDIM paper,\n"
      "App. D.5), decoded with deterministic DDIM. The first and last frames are the\n"
      "reconstructions of A and B. A and B must end up the same size with the same\n"
      "steps and spacing.\n"
      "Ctrl-C stops after the current step and writes nothing (exit status 130).");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (CMD, 2, &argc, &argv, &args, &rc))
    return rc;
  if (argc < 4)
    return cli_usage_error (CMD, argc < 3 ? "missing A and B" : "missing B");
  if (argc > 4)
    return cli_usage_error (CMD, "too many arguments");
  if (output == NULL)
    return cli_usage_error (CMD, "missing -o GRID.png|OUT.safetensors");
  CliOutputKind kind;
  if (!cli_output_kind (CMD, output, &kind, &rc))
    return rc;
  if (!cli_check_range (CMD, "--frames", n, 2, 10000, &rc))
    return rc;
  if (columns != 0 && !cli_check_range (CMD, "--columns", columns, 1, n, &rc))
    return rc;
  if (steps != 0 && !cli_check_range (CMD, "--steps", steps, 1, G_MAXINT, &rc))
    return rc;
  if (t_edit != -1 && !hspace)
    return cli_usage_error (CMD, "--t-edit applies with --hspace only");

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  if (t_edit != -1 && !cli_check_range (CMD, "--t-edit", t_edit, 0,
                                        model->schedule->num_train_timesteps - 1, &rc))
    return rc;

  CliSourceArgs sargs = { steps, spacing, eps_at, native, quiet };
  CliSource a, b;
  rc = cli_source_load (CMD, model, argv[2], &sargs, &a);
  if (rc != CLI_EXIT_OK)
    return rc;
  /* An image B follows a latent A's steps and spacing. */
  CliSourceArgs bargs = sargs;
  if (a.from_latent && !is_latent_file (argv[3]))
    {
      bargs.steps = a.steps;
      bargs.spacing = ddim_spacing_to_string (a.spacing);
    }
  rc = cli_source_load (CMD, model, argv[3], &bargs, &b);
  if (rc != CLI_EXIT_OK)
    {
      cli_source_clear (&a);
      return rc;
    }
  rc = CLI_EXIT_OK;
  if (a.height != b.height || a.width != b.width)
    rc = cli_fail (CMD, "A is %dx%d but B is %dx%d; both must be the same size", a.width,
                   a.height, b.width, b.height);
  else if (a.steps != b.steps || a.spacing != b.spacing)
    rc = cli_fail (CMD, "A's latent has %d steps (%s spacing) but B's has %d (%s); invert "
                   "both with the same steps and spacing", a.steps,
                   ddim_spacing_to_string (a.spacing), b.steps,
                   ddim_spacing_to_string (b.spacing));
  if (rc != CLI_EXIT_OK)
    {
      cli_source_clear (&a);
      cli_source_clear (&b);
      return rc;
    }

  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  gsize count = (gsize) c->in_channels * a.height * a.width;
  g_autofree float *frames = g_new (float, (gsize) n * count);
  InterpJob job = { .model = model, .a = a.x, .b = b.x, .height = a.height, .width = a.width,
                    .n = n, .frames = frames };
  ddim_interpolate_options_init (&job.options, model->schedule);
  job.options.run.steps = a.steps;
  job.options.run.spacing = a.spacing;
  job.options.hspace = hspace;
  job.options.t_edit = t_edit;
  /* One decoding (steps evaluations) per frame. */
  double estimate = cli_estimate_run (CMD, model->unet, job.height, job.width,
                                      (double) n * a.steps, FALSE, quiet);
  rc = cli_run_job_estimate (CMD, CMD, interp_job, &job, quiet, estimate);
  int h = a.height, w = a.width;
  cli_source_clear (&a);
  cli_source_clear (&b);
  if (rc != CLI_EXIT_OK)
    return rc;

  g_autoptr (GError) error = NULL;
  gboolean ok;
  if (kind == CLI_OUTPUT_PNG)
    ok = ddim_image_save_grid_png (output, n, c->out_channels, w, h, frames,
                                   columns > 0 ? columns : n, &error);
  else
    {
      char steps_buf[16];
      g_snprintf (steps_buf, sizeof steps_buf, "%d", job.options.run.steps);
      const char *metadata[] = {
        "model_sha256", model->weights_sha256,
        "steps", steps_buf,
        "interpolation", hspace ? "slerp+h" : "slerp",
        NULL
      };
      ok = cli_save_images (output, kind, "x0", n, c->out_channels, h, w, frames, metadata,
                            &error);
    }
  if (!ok)
    return cli_error (CMD, error);
  return CLI_EXIT_OK;
}
