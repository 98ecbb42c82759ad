/* Helpers shared by the commands (declared in cli.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "progress.h"
#include "ddim/image.h"
#include "ddim/safetensors.h"

static void
print_prefixed (const char *cmd, const char *message)
{
  /* Flush stdout first so that the error comes after anything printed. */
  fflush (stdout);
  fprintf (stderr, "ddim %s: %s\n", cmd, message);
}

int
cli_usage_error (const char *cmd, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  g_autofree char *msg = g_strdup_vprintf (format, ap);
  va_end (ap);
  print_prefixed (cmd, msg);
  fprintf (stderr, "Try 'ddim %s --help' for more information.\n", cmd);
  return CLI_EXIT_USAGE;
}

int
cli_fail (const char *cmd, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  g_autofree char *msg = g_strdup_vprintf (format, ap);
  va_end (ap);
  print_prefixed (cmd, msg);
  return CLI_EXIT_ERROR;
}

int
cli_error (const char *cmd, const GError *error)
{
  print_prefixed (cmd, error ? error->message : "unknown error");
  if (error && (g_error_matches (error, DDIM_ERROR, DDIM_ERROR_CANCELLED)
                || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED)))
    return CLI_EXIT_CANCELLED;
  return CLI_EXIT_ERROR;
}

gboolean
cli_parse_options (GOptionContext *context, const char *cmd, int *argc, char ***argv,
                   int *exit_code)
{
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (context, argc, argv, &error))
    {
      *exit_code = cli_usage_error (cmd, "%s", error->message);
      return FALSE;
    }
  return TRUE;
}

gboolean
cli_has_suffix (const char *path, const char *suffix)
{
  gsize n = strlen (path), m = strlen (suffix);
  return n >= m && g_ascii_strcasecmp (path + n - m, suffix) == 0;
}

gboolean
cli_check_range (const char *cmd, const char *what, int value, int min, int max,
                 int *exit_code)
{
  if (value < min || value > max)
    {
      if (max == G_MAXINT)
        *exit_code = cli_usage_error (cmd, "%s must be at least %d, not %d", what, min, value);
      else
        *exit_code = cli_usage_error (cmd, "%s must be between %d and %d, not %d", what, min,
                                      max, value);
      return FALSE;
    }
  return TRUE;
}

/* A folder with the architecture file of one of the families ddim_model_load
 * reads: diffusers config.json, ermongroup config.yml, ADM model_flags.txt. */
static gboolean
is_model_folder (const char *path)
{
  const char *names[] = { "config.json", "config.yml", "model_flags.txt" };
  for (gsize i = 0; i < G_N_ELEMENTS (names); i++)
    {
      g_autofree char *config = g_build_filename (path, names[i], NULL);
      if (g_file_test (config, G_FILE_TEST_IS_REGULAR))
        return TRUE;
    }
  return FALSE;
}


char *
cli_default_model_dir (GError **error)
{
  const char *env = g_getenv ("DDIM_MODEL");
  if (env != NULL && env[0] != '\0')
    {
      if (is_model_folder (env))
        return g_strdup (env);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "DDIM_MODEL is '%s', which is not a model folder (it has no config.json, "
                   "config.yml or model_flags.txt)", env);
      return NULL;
    }
  const char *candidates[] = { DDIM_INSTALLED_MODEL_DIR, DDIM_SOURCE_MODEL_DIR };
  for (gsize i = 0; i < G_N_ELEMENTS (candidates); i++)
    if (is_model_folder (candidates[i]))
      return g_strdup (candidates[i]);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
               "no MODEL folder given and the default model is not installed (looked in %s and "
               "%s); pass a model folder or set DDIM_MODEL",
               DDIM_INSTALLED_MODEL_DIR, DDIM_SOURCE_MODEL_DIR);
  return NULL;
}


gboolean
cli_model_argument (const char *cmd, int n_after, int *argc, char ***argv, GStrv *owned,
                    int *exit_code)
{
  gboolean omitted = n_after >= 0 ? *argc - 1 == n_after
                                  : *argc < 2 || !is_model_folder ((*argv)[1]);
  if (!omitted)
    return TRUE;
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = cli_default_model_dir (&error);
  if (dir == NULL)
    {
      *exit_code = cli_error (cmd, error);
      return FALSE;
    }
  GStrv v = g_new0 (char *, *argc + 2);
  v[0] = g_strdup ((*argv)[0]);
  v[1] = g_steal_pointer (&dir);
  for (int i = 1; i < *argc; i++)
    v[i + 1] = g_strdup ((*argv)[i]);
  *owned = v;
  *argv = v;
  (*argc)++;
  return TRUE;
}

gboolean
cli_parse_model_only (GOptionContext *context, const char *cmd, int *argc, char ***argv,
                      GStrv *owned, int *exit_code)
{
  if (!cli_parse_options (context, cmd, argc, argv, exit_code)
      || !cli_model_argument (cmd, 0, argc, argv, owned, exit_code))
    return FALSE;
  if (*argc != 2)
    {
      *exit_code = cli_usage_error (cmd, "too many arguments");
      return FALSE;
    }
  return TRUE;
}

DdimModel *
cli_load_model (const char *cmd, const char *folder, int *exit_code)
{
  g_autoptr (GError) error = NULL;
  DdimModel *model = ddim_model_load (folder, &error);
  if (model == NULL)
    *exit_code = cli_error (cmd, error);
  return model;
}


gboolean
cli_output_kind (const char *cmd, const char *path, CliOutputKind *kind, int *exit_code)
{
  if (cli_has_suffix (path, ".png"))
    *kind = CLI_OUTPUT_PNG;
  else if (cli_has_suffix (path, ".safetensors"))
    *kind = CLI_OUTPUT_SAFETENSORS;
  else
    {
      *exit_code = cli_usage_error (cmd, "output file '%s' must end in .png or .safetensors",
                                    path);
      return FALSE;
    }
  return TRUE;
}

gboolean
cli_save_images (const char *path, CliOutputKind kind, const char *tensor_name, int n,
                 int channels, int height, int width, const float *data,
                 const char *const *metadata, GError **error)
{
  if (kind == CLI_OUTPUT_SAFETENSORS)
    {
      g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
      for (const char *const *m = metadata; m && m[0] && m[1]; m += 2)
        ddim_safetensors_writer_add_metadata (w, m[0], m[1]);
      gint64 shape[4] = { n, channels, height, width };
      ddim_safetensors_writer_add_f32 (w, tensor_name, 4, shape, data);
      return ddim_safetensors_writer_save (w, path, error);
    }
  if (n == 1)
    return ddim_image_save_png (path, channels, width, height, data, error);
  int columns = (int) ceil (sqrt ((double) n));
  while (columns * columns < n) /* guard against rounding */
    columns++;
  return ddim_image_save_grid_png (path, n, channels, width, height, data, columns, error);
}

typedef struct {
  CliRunFunc func;
  DdimModel *model;
  float     *x;
  int        n, height, width;
} PlainRun;

static gboolean
plain_run (gpointer data, DdimRunOptions *options, GError **error)
{
  PlainRun *r = data;
  return r->func (r->model->unet, r->model->schedule, r->x, r->n, r->height, r->width, options,
                  error);
}

int
cli_run (const char *cmd, const char *label, CliRunFunc func, DdimModel *model, float *x, int n,
         int height, int width, DdimRunOptions *options, gboolean quiet)
{
  PlainRun r = { func, model, x, n, height, width };
  double estimate = cli_estimate_run (label, model->unet, height, width,
                                      (double) n * options->steps, FALSE, quiet);
  return cli_run_with_estimate (cmd, label, plain_run, &r, options, quiet, estimate);
}

int
cli_run_with (const char *cmd, const char *label, CliRunWithFunc func, gpointer data,
              DdimRunOptions *options, gboolean quiet)
{
  return cli_run_with_estimate (cmd, label, func, data, options, quiet, -1);
}

int
cli_run_with_estimate (const char *cmd, const char *label, CliRunWithFunc func, gpointer data,
                       DdimRunOptions *options, gboolean quiet, double estimate)
{
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (CliProgress) progress = cli_progress_new (label, cancellable, quiet);
  cli_progress_set_estimate (progress, estimate);
  cli_progress_attach (progress, options);

  g_autoptr (GError) error = NULL;
  cli_sigint_install (cmd);
  gboolean ok = func (data, options, &error);
  cli_sigint_restore ();
  cli_progress_end (progress);
  options->progress = NULL;
  options->progress_data = NULL;
  options->cancellable = NULL;

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

char *
cli_group_thousands (guint64 v)
{
  g_autofree char *digits = g_strdup_printf ("%" G_GUINT64_FORMAT, v);
  GString *s = g_string_new (NULL);
  gsize n = strlen (digits);
  for (gsize i = 0; i < n; i++)
    {
      if (i > 0 && (n - i) % 3 == 0)
        g_string_append_c (s, ',');
      g_string_append_c (s, digits[i]);
    }
  return g_string_free (s, FALSE);
}
