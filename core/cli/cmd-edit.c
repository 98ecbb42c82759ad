/* ddim edit MODEL INPUT --direction D --strength S -o OUT: semantic editing;
 * and the helpers the editing commands share (cli_run_job,
 * cli_source_load). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "progress.h"
#include "ddim/directions.h"
#include "ddim/edit.h"
#include "ddim/exact.h"
#include "ddim/image.h"
#include "ddim/latent.h"
#include "ddim/safetensors.h"

#define CMD "edit"

/* ---- shared helpers ---- */

int
cli_run_job (const char *cmd, const char *label, CliJobFunc func, gpointer data, gboolean quiet)
{
  return cli_run_job_estimate (cmd, label, func, data, quiet, -1);
}

int
cli_run_job_estimate (const char *cmd, const char *label, CliJobFunc func, gpointer data,
                      gboolean quiet, double estimate)
{
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (CliProgress) progress = cli_progress_new (label, cancellable, quiet);
  cli_progress_set_estimate (progress, estimate);
  g_autoptr (GError) error = NULL;
  cli_sigint_install (cmd);
  gboolean ok = func (data, cli_progress_update, progress, cancellable, &error);
  cli_sigint_restore ();
  cli_progress_end (progress);
  if (!ok)
    return cli_error (cmd, error);
  if (cli_sigint_received ())
    {
      /* Interrupted after the last step: still write nothing. */
      g_set_error_literal (&error, DDIM_ERROR, DDIM_ERROR_CANCELLED, "cancelled");
      return cli_error (cmd, error);
    }
  return CLI_EXIT_OK;
}

void
cli_source_clear (CliSource *src)
{
  g_clear_pointer (&src->x, g_free);
}

static int
source_from_latent (const char *cmd, DdimModel *model, const char *path,
                    const CliSourceArgs *args, CliSource *src)
{
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimLatent) latent = ddim_latent_load (path, model->weights_sha256, &error);
  if (latent == NULL || !ddim_latent_check_method (latent, DDIM_METHOD_DDIM, &error))
    return cli_error (cmd, error);
  if (latent->channels != c->in_channels)
    return cli_fail (cmd, "%s has %d channels; the model takes %d", path, latent->channels,
                     c->in_channels);
  if (!ddim_unet_check_size (model->unet, latent->height, latent->width, &error))
    return cli_error (cmd, error);
  if (latent->steps > model->schedule->num_train_timesteps)
    return cli_fail (cmd, "%s was made with %d steps; this model has only %d training "
                     "timesteps", path, latent->steps, model->schedule->num_train_timesteps);
  if (args->steps > 0 && args->steps != latent->steps)
    return cli_usage_error (cmd, "--steps %d differs from the %d steps %s was inverted with "
                            "(a latent decodes only with its own steps)", args->steps,
                            latent->steps, path);
  if (args->spacing)
    {
      DdimSpacing sp;
      if (!ddim_spacing_from_string (args->spacing, &sp, &error))
        return cli_usage_error (cmd, "--spacing: %s", error->message);
      if (sp != latent->spacing)
        return cli_usage_error (cmd, "--spacing %s differs from the spacing %s was inverted "
                                "with (%s)", args->spacing, path,
                                ddim_spacing_to_string (latent->spacing));
    }
  src->x = g_steal_pointer (&latent->latent);
  src->height = latent->height;
  src->width = latent->width;
  src->steps = latent->steps;
  src->spacing = latent->spacing;
  src->from_latent = TRUE;
  return CLI_EXIT_OK;
}

/* x0 [C, H, W] from a .safetensors 'x0' tensor or an image file. */
static gboolean
load_x0 (DdimModel *model, const char *path, gboolean native, CliSource *src, GError **error)
{
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  if (cli_has_suffix (path, ".safetensors"))
    {
      g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, error);
      if (st == NULL)
        return FALSE;
      const DdimTensorInfo *info = ddim_safetensors_lookup (st, "x0");
      if (info == NULL || info->ndim != 4 || info->shape[0] != 1
          || info->shape[1] != c->in_channels || info->shape[2] > G_MAXINT
          || info->shape[3] > G_MAXINT)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                       "%s has neither a latent (tensor 'latent', from 'ddim invert') nor an "
                       "image tensor 'x0' [1, %d, H, W]", path, c->in_channels);
          return FALSE;
        }
      src->height = (int) info->shape[2];
      src->width = (int) info->shape[3];
      if (!ddim_unet_check_size (model->unet, src->height, src->width, error))
        return FALSE;
      src->x = ddim_safetensors_read_f32 (st, "x0", 4, info->shape, error);
      return src->x != NULL;
    }
  int size = native ? 0 : c->sample_size;
  g_autoptr (DdimImage) img = ddim_image_load (path, c->in_channels, size, size, error);
  if (img == NULL)
    return FALSE;
  if (native && !ddim_unet_check_size (model->unet, img->height, img->width, error))
    {
      g_prefix_error (error, "%s: ", path);
      return FALSE;
    }
  src->height = img->height;
  src->width = img->width;
  src->x = g_steal_pointer (&img->data);
  return TRUE;
}

int
cli_source_load (const char *cmd, DdimModel *model, const char *path, const CliSourceArgs *args,
                 CliSource *src)
{
  memset (src, 0, sizeof *src);
  if (cli_has_suffix (path, ".safetensors"))
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, &error);
      if (st == NULL)
        return cli_error (cmd, error);
      if (ddim_safetensors_lookup (st, "latent") != NULL)
        return source_from_latent (cmd, model, path, args, src);
    }

  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  if (args->steps > 0)
    o.steps = args->steps;
  if (o.steps > model->schedule->num_train_timesteps)
    return cli_usage_error (cmd, "--steps must be between 1 and %d (the model's training "
                            "timesteps), not %d", model->schedule->num_train_timesteps, o.steps);
  g_autoptr (GError) error = NULL;
  if (args->spacing && !ddim_spacing_from_string (args->spacing, &o.spacing, &error))
    return cli_usage_error (cmd, "--spacing: %s", error->message);
  if (args->eps_at && !ddim_eps_at_from_string (args->eps_at, &o.eps_at, &error))
    return cli_usage_error (cmd, "--eps-at: %s", error->message);
  if (!load_x0 (model, path, args->native, src, &error))
    {
      cli_source_clear (src);
      return cli_error (cmd, error);
    }
  int rc = cli_run (cmd, "invert", ddim_invert, model, src->x, 1, src->height, src->width, &o,
                    args->quiet);
  if (rc != CLI_EXIT_OK)
    {
      cli_source_clear (src);
      return rc;
    }
  src->steps = o.steps;
  src->spacing = o.spacing;
  return CLI_EXIT_OK;
}

/* ---- ddim edit ---- */

gboolean
cli_parse_strengths (const char *text, GArray *out, GError **error)
{
  g_auto (GStrv) parts = g_strsplit (text, ",", -1);
  for (int i = 0; parts[i]; i++)
    {
      const char *p = g_strstrip (parts[i]);
      char *end = NULL;
      errno = 0;
      double v = g_ascii_strtod (p, &end);
      if (p[0] == '\0' || *end != '\0' || errno == ERANGE)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                       "'%s' is not a number (give S or a list S1,S2,...)", p);
          return FALSE;
        }
      if (!ddim_direction_check_strength (v, error))
        return FALSE;
      g_array_append_val (out, v);
    }
  return TRUE;
}

/* Looks @name up: in @file when given, else @name itself when it is a file
 * (which must then hold one direction), else MODEL/directions.safetensors. */
static DdimDirectionSet *
resolve_direction (DdimModel *model, const char *name, const char *file, DdimDirection **out,
                   GError **error)
{
  g_autofree char *path = NULL;
  gboolean name_is_file = file == NULL && g_file_test (name, G_FILE_TEST_IS_REGULAR);
  if (file)
    path = g_strdup (file);
  else if (name_is_file)
    path = g_strdup (name);
  else
    {
      path = g_build_filename (model->path, DDIM_DIRECTIONS_FILE, NULL);
      if (!g_file_test (path, G_FILE_TEST_EXISTS))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                       "there is no direction '%s': %s has no %s (and no file of that name "
                       "exists); make directions with 'ddim directions fit|discover|pca' and "
                       "pass the file with --directions FILE", name, model->path,
                       DDIM_DIRECTIONS_FILE);
          return NULL;
        }
    }
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_load (path, error);
  if (set == NULL)
    return NULL;
  if (name_is_file)
    {
      if (ddim_direction_set_get_n (set) != 1)
        {
          g_autofree char *names = ddim_direction_set_list_names (set);
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                       "%s holds %u directions (%s); pick one with --directions %s "
                       "--direction NAME", path, ddim_direction_set_get_n (set), names, path);
          return NULL;
        }
      *out = ddim_direction_set_get_nth (set, 0);
    }
  else
    {
      *out = ddim_direction_set_lookup (set, name, error);
      if (*out == NULL)
        {
          g_prefix_error (error, "%s: ", path);
          return NULL;
        }
    }
  return g_steal_pointer (&set);
}

typedef struct {
  DdimModel           *model;
  const DdimDirection *direction;
  const float         *latent;       /* x_T [C, H, W] */
  int                  height, width;
  GArray              *strengths;    /* double */
  int                  t_edit;
  DdimRunOptions       options;
  float               *out;          /* [n_strengths, C, H, W] */
  /* progress over all strengths */
  DdimProgressFunc     progress;
  gpointer             progress_data;
  int                  offset, total;
} EditJob;

static void
edit_progress (int done, int total, gpointer data)
{
  (void) total;
  EditJob *j = data;
  j->progress (j->offset + done, j->total, j->progress_data);
}

static gboolean
edit_job (gpointer data, DdimProgressFunc progress, gpointer progress_data,
          GCancellable *cancellable, GError **error)
{
  EditJob *j = data;
  const DdimUNetConfig *c = ddim_unet_get_config (j->model->unet);
  gsize count = (gsize) c->in_channels * j->height * j->width;
  j->progress = progress;
  j->progress_data = progress_data;
  j->total = (int) j->strengths->len * j->options.steps;
  j->options.progress = edit_progress;
  j->options.progress_data = j;
  j->options.cancellable = cancellable;
  for (guint i = 0; i < j->strengths->len; i++)
    {
      float *x = j->out + i * count;
      memcpy (x, j->latent, count * sizeof (float));
      j->offset = (int) i * j->options.steps;
      if (!ddim_edit (j->model->unet, j->model->schedule, x, 1, j->height, j->width,
                      j->direction, g_array_index (j->strengths, double, i), j->t_edit,
                      &j->options, error))
        return FALSE;
    }
  return TRUE;
}

int
cli_cmd_edit (int argc, char **argv)
{
  g_autofree char *output = NULL, *direction = NULL, *directions = NULL, *strength = NULL;
  g_autofree char *spacing = NULL, *eps_at = NULL;
  int steps = 0, t_edit = -1;
  gboolean native = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
    { "direction", 'd', 0, G_OPTION_ARG_STRING, &direction,
      "Direction (required): a NAME or component-N from MODEL/directions.safetensors (or "
      "from --directions), or a directions FILE holding one direction", "NAME|FILE" },
    { "strength", 's', 0, G_OPTION_ARG_STRING, &strength,
      "Signed strength (required); a list S1,S2,... writes one image per strength (a row of "
      "a grid)", "S" },
    { "t-edit", 't', 0, G_OPTION_ARG_INT, &t_edit,
      "Edit timestep: h-space directions shift h for every step with t >= T; x-space ones "
      "move x_t once at T (default: the direction's own timestep)", "T" },
    { "directions", 0, 0, G_OPTION_ARG_FILENAME, &directions,
      "Directions file to look NAME up in (default MODEL/directions.safetensors)", "FILE" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Output file (required): .png or .safetensors (tensor 'x0' [n, C, H, W])", "FILE" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps,
      "DDIM steps for inverting an image (default 50; a latent keeps its own)", "N" },
    { "spacing", 0, 0, G_OPTION_ARG_STRING, &spacing,
      "Timestep spacing for inverting an image: leading, trailing or linspace", "SPACING" },
    { "eps-at", 0, 0, G_OPTION_ARG_STRING, &eps_at,
      "Where inversion evaluates the noise prediction: current or target", "current|target" },
    { "native", 0, 0, G_OPTION_ARG_NONE, &native,
      "Keep an image at its own size instead of resizing it to the model's sample_size", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL] IMAGE|LATENT");
  g_option_context_set_summary (ctx,
      "Edits an image along a semantic direction while DDIM sampling it back from its\n"
      "latent. An IMAGE (or a .safetensors 'x0') is inverted first; a LATENT from\n"
      "'ddim invert' is used as is. h-space directions shift the UNet's mid-block\n"
      "output over the steps with t >= t-edit (Asyrp's asymmetric step); x-space\n"
      "directions (Jacobian components) move x_t once at t-edit. Strength 0 gives\n"
      "the plain reconstruction exactly.\n"
      "Ctrl-C stops after the current step and writes nothing (exit status 130).");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (CMD, 1, &argc, &argv, &args, &rc))
    return rc;
  if (argc < 3)
    return cli_usage_error (CMD, "missing IMAGE or LATENT");
  if (argc > 3)
    return cli_usage_error (CMD, "too many arguments");
  if (direction == NULL)
    return cli_usage_error (CMD, "missing --direction NAME|component-N|FILE");
  if (strength == NULL)
    return cli_usage_error (CMD, "missing --strength S");
  if (output == NULL)
    return cli_usage_error (CMD, "missing -o OUT.png|OUT.safetensors");
  CliOutputKind kind;
  if (!cli_output_kind (CMD, output, &kind, &rc))
    return rc;
  g_autoptr (GArray) strengths = g_array_new (FALSE, FALSE, sizeof (double));
  {
    g_autoptr (GError) e = NULL;
    if (!cli_parse_strengths (strength, strengths, &e))
      return cli_usage_error (CMD, "--strength: %s", e->message);
  }
  if (steps != 0 && !cli_check_range (CMD, "--steps", steps, 1, G_MAXINT, &rc))
    return rc;

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  if (t_edit != -1 && !cli_check_range (CMD, "--t-edit", t_edit, 0,
                                        model->schedule->num_train_timesteps - 1, &rc))
    return rc;

  g_autoptr (GError) error = NULL;
  DdimDirection *dir = NULL;
  g_autoptr (DdimDirectionSet) set = resolve_direction (model, direction, directions, &dir,
                                                        &error);
  if (set == NULL)
    return cli_error (CMD, error);

  /* Check the direction before spending time on the inversion. The size is
   * known for latents only; images are checked at the model size unless
   * native. */
  CliSourceArgs sargs = { steps, spacing, eps_at, native, quiet };
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  if (!native && !cli_has_suffix (argv[2], ".safetensors")
      && !ddim_direction_check (dir, model->unet, model->weights_sha256, c->sample_size,
                                c->sample_size, &error))
    return cli_error (CMD, error);
  CliSource src;
  rc = cli_source_load (CMD, model, argv[2], &sargs, &src);
  if (rc != CLI_EXIT_OK)
    return rc;
  if (!ddim_direction_check (dir, model->unet, model->weights_sha256, src.height, src.width,
                             &error))
    {
      cli_source_clear (&src);
      return cli_error (CMD, error);
    }

  gsize count = (gsize) c->in_channels * src.height * src.width;
  g_autofree float *out = g_new (float, strengths->len * count);
  EditJob job = { 0 };
  job.model = model;
  job.direction = dir;
  job.latent = src.x;
  job.height = src.height;
  job.width = src.width;
  job.strengths = strengths;
  job.t_edit = t_edit;
  ddim_run_options_init (&job.options, model->schedule);
  job.options.steps = src.steps;
  job.options.spacing = src.spacing;
  job.out = out;
  if (!quiet)
    {
      int te = t_edit >= 0 ? t_edit : ddim_edit_default_t_edit (dir, model->schedule);
      fprintf (stderr, "ddim %s: direction '%s' (%s-space), %s t %d, %d steps\n", CMD,
               dir->name, ddim_direction_space_to_string (dir->space),
               dir->space == DDIM_SPACE_X ? "at" : "from", te, src.steps);
    }
  /* One decoding (steps evaluations) per strength. */
  double estimate = cli_estimate_run (CMD, model->unet, src.height, src.width,
                                      (double) strengths->len * src.steps, FALSE, quiet);
  rc = cli_run_job_estimate (CMD, CMD, edit_job, &job, quiet, estimate);
  int n = (int) strengths->len;
  int h = src.height, w = src.width;
  cli_source_clear (&src);
  if (rc != CLI_EXIT_OK)
    return rc;

  gboolean ok;
  if (kind == CLI_OUTPUT_PNG && n > 1)
    ok = ddim_image_save_grid_png (output, n, c->out_channels, w, h, out, n, &error);
  else
    {
      char steps_buf[16];
      g_snprintf (steps_buf, sizeof steps_buf, "%d", job.options.steps);
      g_autofree char *strength_list = g_strdup (strength);
      const char *metadata[] = {
        "model_sha256", model->weights_sha256,
        "direction", dir->name,
        "strength", strength_list,
        "steps", steps_buf,
        NULL
      };
      ok = cli_save_images (output, kind, "x0", n, c->out_channels, h, w, out, metadata, &error);
    }
  if (!ok)
    return cli_error (CMD, error);
  return CLI_EXIT_OK;
}
