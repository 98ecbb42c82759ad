/* ddim directions merge|set-range: editing directions files as a whole
 * (one file per model holding class directions and global components; the
 * strength range a sweep of 'ddim eval-edit' chose). */
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "cli.h"
#include "cmd-directions.h"

/* ---- merge ---- */

int
cli_directions_merge (int argc, char **argv)
{
  const char *cmd = "directions merge";
  g_autofree char *output = NULL;
  gboolean quiet = FALSE;
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Directions file to write (required; replaced atomically, and it may be one of the "
      "inputs)", "FILE" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "Say nothing on success", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("FILE|MODEL FILE|MODEL...");
  g_option_context_set_summary (ctx,
      "Writes the directions of every input, in order, into one file (e.g. the class\n"
      "directions and the PCA components of one model). Refuses two directions of the\n"
      "same name and directions that cannot come from one model (other weights, or\n"
      "another h-space or image shape), writing nothing then.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  if (!cli_parse_options (ctx, cmd, &argc, &argv, &rc))
    return rc;
  if (argc < 3)
    return cli_usage_error (cmd, "give at least two directions files to merge");
  if (output == NULL)
    return cli_usage_error (cmd, "missing -o FILE");
  g_autoptr (DdimDirectionSet) all = ddim_direction_set_new ();
  g_autoptr (GError) error = NULL;
  for (int i = 1; i < argc; i++)
    {
      g_autofree char *path = cli_directions_path (argv[i]);
      g_autoptr (DdimDirectionSet) set = ddim_direction_set_load (path, &error);
      if (set == NULL || !ddim_direction_set_merge_strict (all, set, path, &error))
        return cli_error (cmd, error);
    }
  if (!ddim_direction_set_save (all, output, &error))
    return cli_error (cmd, error);
  if (!quiet)
    fprintf (stderr, "ddim %s: wrote %u directions from %d files to %s\n", cmd,
             ddim_direction_set_get_n (all), argc - 1, output);
  return CLI_EXIT_OK;
}

/* ---- set-range ---- */

static gboolean
parse_strength (const char *what, const char *text, double *out, GError **error)
{
  char *end = NULL;
  errno = 0;
  double v = g_ascii_strtod (text, &end);
  if (text[0] == '\0' || *end != '\0' || errno == ERANGE || !isfinite (v))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "%s must be a finite number, not '%s'",
                   what, text);
      return FALSE;
    }
  *out = v;
  return TRUE;
}

int
cli_directions_set_range (int argc, char **argv)
{
  const char *cmd = "directions set-range";
  g_autofree char *min_text = NULL, *max_text = NULL;
  GOptionEntry entries[] = {
    { "min", 0, 0, G_OPTION_ARG_STRING, &min_text, "Lower end of the recommended strengths",
      "S" },
    { "max", 0, 0, G_OPTION_ARG_STRING, &max_text,
      "Upper end (what 'ddim eval-edit' uses by default)", "S" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("FILE|MODEL NAME");
  g_option_context_set_summary (ctx,
      "Records the recommended strength range of direction NAME in a directions file\n"
      "(e.g. the strength an 'ddim eval-edit --strengths' sweep chose); the ends not\n"
      "given are kept. The file is rewritten atomically.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  if (!cli_parse_options (ctx, cmd, &argc, &argv, &rc))
    return rc;
  if (argc != 3)
    return cli_usage_error (cmd, argc < 3 ? "missing FILE and NAME" : "too many arguments");
  if (min_text == NULL && max_text == NULL)
    return cli_usage_error (cmd, "give --min S, --max S or both");
  g_autoptr (GError) error = NULL;
  double lo = 0, hi = 0;
  if ((min_text && !parse_strength ("--min", min_text, &lo, &error))
      || (max_text && !parse_strength ("--max", max_text, &hi, &error)))
    return cli_usage_error (cmd, "%s", error->message);

  g_autofree char *path = cli_directions_path (argv[1]);
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_load (path, &error);
  if (set == NULL)
    return cli_error (cmd, error);
  DdimDirection *d = ddim_direction_set_lookup (set, argv[2], &error);
  if (d == NULL)
    {
      g_prefix_error (&error, "%s: ", path);
      return cli_error (cmd, error);
    }
  double old_lo = d->strength_min, old_hi = d->strength_max;
  if (min_text == NULL)
    lo = old_lo;
  if (max_text == NULL)
    hi = old_hi;
  if (lo > hi)
    return cli_usage_error (cmd, "the range %g..%g of '%s' would be empty (minimum above "
                            "maximum)", lo, hi, d->name);
  d->strength_min = lo;
  d->strength_max = hi;
  if (!ddim_direction_set_save (set, path, &error))
    return cli_error (cmd, error);
  printf ("%s: '%s' recommended strengths %.4g..%.4g (were %.4g..%.4g)\n", path, d->name, lo, hi,
          old_lo, old_hi);
  return CLI_EXIT_OK;
}
