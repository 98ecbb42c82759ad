/* ddim directions list|fit|discover|pca|merge|set-range: semantic
 * directions files (fit --by-class in cmd-directions-class.c, merge and
 * set-range in cmd-directions-file.c). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd-directions.h"
#include "ddim/directions.h"
#include "ddim/discover.h"
#include "ddim/fit.h"
#include "ddim/image.h"
#include "ddim/latent.h"

/* ---- shared ---- */

char *
cli_directions_path (const char *arg)
{
  if (g_file_test (arg, G_FILE_TEST_IS_DIR))
    return g_build_filename (arg, DDIM_DIRECTIONS_FILE, NULL);
  return g_strdup (arg);
}

/* Adds @made to the directions file @path (created if missing; directions
 * of the same name are replaced), atomically. */
static int
save_merged (const char *cmd, const char *path, DdimDirectionSet *made, gboolean quiet)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDirectionSet) all = NULL;
  if (g_file_test (path, G_FILE_TEST_EXISTS))
    {
      all = ddim_direction_set_load (path, &error);
      if (all == NULL)
        return cli_fail (cmd, "%s exists and cannot be added to (%s); pick another -o file",
                         path, error->message);
    }
  else
    all = ddim_direction_set_new ();
  ddim_direction_set_merge (all, made);
  if (!ddim_direction_set_save (all, path, &error))
    return cli_error (cmd, error);
  if (!quiet)
    {
      g_autofree char *names = ddim_direction_set_list_names (made);
      fprintf (stderr, "ddim %s: wrote %s to %s (%u direction%s in the file)\n", cmd, names,
               path, ddim_direction_set_get_n (all), ddim_direction_set_get_n (all) == 1 ? "" : "s");
    }
  return CLI_EXIT_OK;
}

/* ---- list ---- */

static int
cmd_list (int argc, char **argv)
{
  const char *cmd = "directions list";
  GOptionEntry entries[] = { G_OPTION_ENTRY_NULL };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL|FILE]");
  g_option_context_set_summary (ctx,
      "Lists the directions of MODEL/directions.safetensors or of a directions FILE:\n"
      "name, kind, space (h: shifts the mid-block output; x: moves x_t), shape, the\n"
      "timesteps it was made at, the recommended strengths and its description.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  if (!cli_parse_options (ctx, cmd, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (argc < 2 && !cli_model_argument (cmd, 0, &argc, &argv, &args, &rc))
    return rc;
  if (argc != 2)
    return cli_usage_error (cmd, argc < 2 ? "missing MODEL folder or directions FILE"
                                          : "too many arguments");
  g_autofree char *path = cli_directions_path (argv[1]);
  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    return cli_fail (cmd, "%s does not exist%s", path,
                     g_file_test (argv[1], G_FILE_TEST_IS_DIR)
                         ? " (the model has no directions; make some with 'ddim directions "
                           "fit|discover|pca')" : "");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_load (path, &error);
  if (set == NULL)
    return cli_error (cmd, error);
  guint n = ddim_direction_set_get_n (set);
  printf ("%s: %u direction%s\n", path, n, n == 1 ? "" : "s");
  if (n == 0)
    return CLI_EXIT_OK;
  /* The shape column fits "[128, 8, 8] at 14 timesteps" when there is one. */
  int shape_width = 14;
  for (guint i = 0; i < n; i++)
    {
      g_autofree char *shape = ddim_direction_shape_string (ddim_direction_set_get_nth (set, i));
      shape_width = MAX (shape_width, (int) strlen (shape));
    }
  printf ("%-20s %-12s %-15s %-5s %-*s %-10s %-22s %s\n", "NAME", "KIND", "METHOD", "SPACE",
          shape_width, "SHAPE", "T", "STRENGTH", "DESCRIPTION");
  for (guint i = 0; i < n; i++)
    {
      const DdimDirection *d = ddim_direction_set_get_nth (set, i);
      g_autofree char *shape = ddim_direction_shape_string (d);
      g_autofree char *trange = d->t_min < 0 ? g_strdup ("-")
                                : d->t_min == d->t_max ? g_strdup_printf ("%d", d->t_min)
                                : g_strdup_printf ("%d-%d", d->t_min, d->t_max);
      g_autofree char *srange = (d->strength_min == 0 && d->strength_max == 0)
                                    ? g_strdup ("-")
                                    : g_strdup_printf ("%.4g..%.4g", d->strength_min,
                                                       d->strength_max);
      printf ("%-20s %-12s %-15s %-5s %-*s %-10s %-22s %s\n", d->name,
              ddim_direction_kind_to_string (d->kind),
              d->method && d->method[0] ? d->method : "-",
              ddim_direction_space_to_string (d->space), shape_width, shape, trange, srange,
              d->description ? d->description : "");
    }
  return CLI_EXIT_OK;
}

/* ---- fit ---- */

static int
compare_paths (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(const char *const *) a, *(const char *const *) b);
}

/* Image files of @dir in name order. */
static GPtrArray *
list_images (const char *dir, GError **error)
{
  static const char *const exts[] = { ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif",
                                      ".tiff", ".webp", ".ppm", ".pgm" };
  g_autoptr (GDir) d = g_dir_open (dir, 0, error);
  if (d == NULL)
    return NULL;
  GPtrArray *files = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    for (gsize i = 0; i < G_N_ELEMENTS (exts); i++)
      if (cli_has_suffix (name, exts[i]))
        {
          g_ptr_array_add (files, g_build_filename (dir, name, NULL));
          break;
        }
  g_ptr_array_sort (files, compare_paths);
  if (files->len == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "%s holds no image files (png, jpg, ...)", dir);
      g_ptr_array_unref (files);
      return NULL;
    }
  return files;
}

/* All images of @dir at the model size, stacked [n, C, S, S]. */
static float *
load_image_set (DdimModel *model, const char *dir, int *n, GError **error)
{
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  g_autoptr (GPtrArray) files = list_images (dir, error);
  if (files == NULL)
    return NULL;
  gsize count = (gsize) c->in_channels * c->sample_size * c->sample_size;
  g_autofree float *all = g_new (float, files->len * count);
  for (guint i = 0; i < files->len; i++)
    {
      g_autoptr (DdimImage) img = ddim_image_load (g_ptr_array_index (files, i), c->in_channels,
                                                   c->sample_size, c->sample_size, error);
      if (img == NULL)
        return NULL;
      memcpy (all + i * count, img->data, count * sizeof (float));
    }
  *n = (int) files->len;
  return g_steal_pointer (&all);
}

typedef struct {
  DdimModel      *model;
  const char     *name;
  const float    *pos, *neg;
  int             n_pos, n_neg;
  DdimFitOptions  options;
  DdimDirection  *result;
} FitJob;

static gboolean
fit_job (gpointer data, DdimProgressFunc progress, gpointer progress_data,
         GCancellable *cancellable, GError **error)
{
  FitJob *j = data;
  const DdimUNetConfig *c = ddim_unet_get_config (j->model->unet);
  j->options.run.progress = progress;
  j->options.run.progress_data = progress_data;
  j->options.run.cancellable = cancellable;
  j->result = ddim_fit_direction (j->model->unet, j->model->schedule, j->name, j->pos, j->n_pos,
                                  j->neg, j->n_neg, c->sample_size, c->sample_size, &j->options,
                                  error);
  return j->result != NULL;
}

static int
cmd_fit (int argc, char **argv)
{
  const char *cmd = "directions fit";
  g_autofree char *positive = NULL, *negative = NULL, *output = NULL, *name = NULL;
  g_autofree char *description = NULL, *spacing = NULL, *eps_at = NULL, *method = NULL;
  g_autofree char *data = NULL, *classes = NULL;
  int steps = 50, t_min = -1, t_max = -1, per_class = -1;
  gboolean pool = FALSE, quiet = FALSE, by_class = FALSE, per_timestep = FALSE;
  GOptionEntry entries[] = {
    { "positive", 'p', 0, G_OPTION_ARG_FILENAME, &positive,
      "Folder of images with the attribute (required unless --by-class)", "DIR" },
    { "negative", 'n', 0, G_OPTION_ARG_FILENAME, &negative,
      "Folder of images without it (required unless --by-class)", "DIR" },
    { "by-class", 0, 0, G_OPTION_ARG_NONE, &by_class,
      "Instead: one direction per class of the labelled --data, named after the class "
      "(t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle-boot) "
      "and described 'toward CLASS'", NULL },
    { "data", 0, 0, G_OPTION_ARG_STRING, &data,
      "--by-class: the labelled images, fashion-mnist (the training split) or "
      "fashion-mnist-test", "DATA" },
    { "per-class", 0, 0, G_OPTION_ARG_INT, &per_class,
      "--by-class: use the first N images of each class in the data (default 100)", "N" },
    { "classes", 0, 0, G_OPTION_ARG_STRING, &classes,
      "--by-class: fit only these classes (default all; the others still serve as "
      "negatives)", "NAME,..." },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Directions file to add the direction to (created if missing; one of the same name is "
      "replaced), e.g. MODEL/directions.safetensors (required)", "FILE" },
    { "name", 0, 0, G_OPTION_ARG_STRING, &name,
      "Name of the direction (default: the name of the positive folder)", "NAME" },
    { "description", 0, 0, G_OPTION_ARG_STRING, &description, "Description to record", "TEXT" },
    { "method", 0, 0, G_OPTION_ARG_STRING, &method,
      "mean-difference (default), prototype (from the negatives' mean to the one positive "
      "nearest the positives' mean: keeps fine features a mean blurs) or logistic (normal of "
      "a linear boundary)", "METHOD" },
    { "pool", 0, 0, G_OPTION_ARG_NONE, &pool,
      "Average h over positions: a [C] direction that works at any image size", NULL },
    { "per-timestep", 0, 0, G_OPTION_ARG_NONE, &per_timestep,
      "One displacement per sampling step in [t-min, t-max] instead of one for all (an "
      "edit with other steps interpolates between them)", NULL },
    { "t-min", 0, 0, G_OPTION_ARG_INT, &t_min,
      "Collect h at sampling steps with t >= T (default: half the training timesteps)", "T" },
    { "t-max", 0, 0, G_OPTION_ARG_INT, &t_max,
      "... and t <= T (default: the last training timestep)", "T" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps, "DDIM steps for inversion and sampling (default 50)",
      "N" },
    { "spacing", 0, 0, G_OPTION_ARG_STRING, &spacing,
      "Timestep spacing: leading, trailing or linspace", "SPACING" },
    { "eps-at", 0, 0, G_OPTION_ARG_STRING, &eps_at,
      "Where inversion evaluates the noise prediction: current or target", "current|target" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL]");
  g_option_context_set_summary (ctx,
      "Fits an h-space direction from examples: every image (resized to the model's\n"
      "sample_size) is inverted with DDIM and sampled back, h is averaged over the\n"
      "sampling steps in [t-min, t-max], and the direction is the unit vector from\n"
      "the negatives' mean to the positives' (to the positive nearest that mean with\n"
      "--method prototype; or the normal of a logistic boundary). The recommended\n"
      "strength range recorded is +-2x the distance between the two ends.\n"
      "With --per-timestep, h is kept per step and the direction has a displacement\n"
      "for each (their RMS norm 1): edits follow how h changes over the steps.\n"
      "With --by-class, every class's direction is fitted from the first N images of\n"
      "each class: that class's images are the positives, those of the nine others\n"
      "(each class weighing the same) the negatives; every image is inverted once.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  if (!cli_parse_options (ctx, cmd, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (cmd, 0, &argc, &argv, &args, &rc))
    return rc;
  if (argc != 2)
    return cli_usage_error (cmd, "too many arguments");
  if (by_class)
    {
      if (positive || negative)
        return cli_usage_error (cmd, "--by-class takes its examples from --data, not from "
                                "--positive/--negative");
      if (data == NULL)
        return cli_usage_error (cmd, "--by-class needs --data fashion-mnist|fashion-mnist-test");
      if (name || description)
        return cli_usage_error (cmd, "--by-class names each direction after its class; "
                                "--name and --description are for one direction");
      if (per_class == -1)
        per_class = 100;
      if (!cli_check_range (cmd, "--per-class", per_class, 1, 100000, &rc))
        return rc;
    }
  else if (data || classes || per_class != -1)
    return cli_usage_error (cmd, "--data, --per-class and --classes go with --by-class");
  else if (positive == NULL || negative == NULL)
    return cli_usage_error (cmd, "missing --positive DIR and --negative DIR (or --by-class "
                            "--data DATA)");
  if (output == NULL)
    return cli_usage_error (cmd, "missing -o FILE");
  if (!cli_check_range (cmd, "--steps", steps, 1, G_MAXINT, &rc))
    return rc;
  g_autofree char *dname = NULL;
  g_autoptr (GError) error = NULL;
  if (!by_class)
    {
      dname = name ? g_strdup (name) : g_path_get_basename (positive);
      if (!ddim_direction_name_is_valid (dname, &error))
        return cli_usage_error (cmd, "%s%s", error->message,
                                name ? "" : "; give one with --name");
    }

  g_autoptr (DdimModel) model = cli_load_model (cmd, argv[1], &rc);
  if (model == NULL)
    return rc;
  FitJob job = { 0 };
  ddim_fit_options_init (&job.options, model->schedule);
  job.options.run.steps = steps;
  if (steps > model->schedule->num_train_timesteps)
    return cli_usage_error (cmd, "--steps must be at most %d", model->schedule->num_train_timesteps);
  if ((spacing && !ddim_spacing_from_string (spacing, &job.options.run.spacing, &error))
      || (eps_at && !ddim_eps_at_from_string (eps_at, &job.options.run.eps_at, &error))
      || (method && !ddim_fit_method_from_string (method, &job.options.method, &error)))
    return cli_usage_error (cmd, "%s", error->message);
  job.options.t_min = t_min;
  job.options.t_max = t_max;
  job.options.pool_space = pool;
  job.options.per_timestep = per_timestep;
  job.options.description = description;
  job.options.model_sha256 = model->weights_sha256;
  if (by_class)
    {
      g_autoptr (DdimDirectionSet) made = cli_fit_class_directions (cmd, model, data, per_class,
                                                                    classes, &job.options,
                                                                    quiet, &rc);
      if (made == NULL)
        return rc;
      return save_merged (cmd, output, made, quiet);
    }

  g_autofree float *pos = load_image_set (model, positive, &job.n_pos, &error);
  if (pos == NULL)
    return cli_error (cmd, error);
  g_autofree float *neg = load_image_set (model, negative, &job.n_neg, &error);
  if (neg == NULL)
    return cli_error (cmd, error);
  job.model = model;
  job.name = dname;
  job.pos = pos;
  job.neg = neg;
  if (!quiet)
    fprintf (stderr, "ddim %s: %d positive and %d negative images, %d steps\n", cmd, job.n_pos,
             job.n_neg, steps);
  rc = cli_run_job (cmd, "fit", fit_job, &job, quiet);
  if (rc != CLI_EXIT_OK)
    return rc;
  g_autoptr (DdimDirectionSet) made = ddim_direction_set_new ();
  if (!quiet)
    fprintf (stderr, "ddim %s: '%s': distance between the means along it %.4g, recommended "
             "strengths %.4g..%.4g\n", cmd, job.result->name, job.result->sigma,
             job.result->strength_min, job.result->strength_max);
  ddim_direction_set_add (made, job.result);
  return save_merged (cmd, output, made, quiet);
}

/* ---- discover ---- */

typedef struct {
  DdimModel           *model;
  const float         *x_t;
  int                  height, width, t;
  DdimDiscoverOptions  options;
  DdimDirectionSet    *result;
} DiscoverJob;

static gboolean
discover_job (gpointer data, DdimProgressFunc progress, gpointer progress_data,
              GCancellable *cancellable, GError **error)
{
  DiscoverJob *j = data;
  j->options.progress = progress;
  j->options.progress_data = progress_data;
  j->options.cancellable = cancellable;
  j->result = ddim_discover_jacobian (j->model->unet, j->x_t, j->height, j->width, j->t,
                                      &j->options, error);
  return j->result != NULL;
}

static int
cmd_discover (int argc, char **argv)
{
  const char *cmd = "directions discover";
  g_autofree char *output = NULL, *space = NULL, *prefix = NULL, *spacing = NULL;
  g_autofree char *eps_at = NULL;
  int k = 4, t = -1, steps = 0, iterations = 30;
  gint64 seed = 0;
  gboolean native = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
    { "components", 'k', 0, G_OPTION_ARG_INT, &k, "Number of components (default 4)", "K" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Directions file to add them to (created if missing; same names replaced) (required)",
      "FILE" },
    { "t", 't', 0, G_OPTION_ARG_INT, &t,
      "Timestep of the Jacobian (default: half the training timesteps); the sampling step "
      "at or below it is used", "T" },
    { "space", 0, 0, G_OPTION_ARG_STRING, &space,
      "x (edit x_t, Park et al.), h (edit h, Asyrp-style) or both (default)", "x|h|both" },
    { "prefix", 0, 0, G_OPTION_ARG_STRING, &prefix,
      "Names are PREFIX-N (x) and PREFIX-N-h (h); default 'component'", "PREFIX" },
    { "iterations", 0, 0, G_OPTION_ARG_INT, &iterations,
      "Power iterations at most (default 30)", "N" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed of the starting subspace (default 0)",
      "S" },
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
      "Finds unsupervised directions for one image (Park et al., NeurIPS 2023): the\n"
      "top-k right singular vectors v of the Jacobian J = dh/dx_t of the UNet's\n"
      "mid-block output h at the image's x_t (its latent sampled down to t), by\n"
      "subspace power iteration. x-space directions are the v (edit: x_t + g v);\n"
      "h-space ones are u = J v / sigma (edit: h + g u). Edit with\n"
      "'ddim edit MODEL IMAGE --directions FILE --direction component-N'.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  if (!cli_parse_options (ctx, cmd, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (cmd, 1, &argc, &argv, &args, &rc))
    return rc;
  if (argc != 3)
    return cli_usage_error (cmd, argc < 3 ? "missing IMAGE or LATENT"
                                          : "too many arguments");
  if (output == NULL)
    return cli_usage_error (cmd, "missing -o FILE");
  if (!cli_check_range (cmd, "-k", k, 1, 4096, &rc)
      || !cli_check_range (cmd, "--iterations", iterations, 1, G_MAXINT, &rc)
      || (steps != 0 && !cli_check_range (cmd, "--steps", steps, 1, G_MAXINT, &rc)))
    return rc;
  gboolean want_x = TRUE, want_h = TRUE;
  if (space && g_str_equal (space, "x"))
    want_h = FALSE;
  else if (space && g_str_equal (space, "h"))
    want_x = FALSE;
  else if (space && !g_str_equal (space, "both"))
    return cli_usage_error (cmd, "--space must be x, h or both, not '%s'", space);

  g_autoptr (DdimModel) model = cli_load_model (cmd, argv[1], &rc);
  if (model == NULL)
    return rc;
  int T = model->schedule->num_train_timesteps;
  if (t == -1)
    t = T / 2;
  if (!cli_check_range (cmd, "--t", t, 0, T - 1, &rc))
    return rc;

  CliSourceArgs sargs = { steps, spacing, eps_at, native, quiet };
  CliSource src;
  rc = cli_source_load (cmd, model, argv[2], &sargs, &src);
  if (rc != CLI_EXIT_OK)
    return rc;

  /* x_t exactly as the editor meets it: the state before the first
   * sampling step at or below t when decoding the latent. */
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  gsize count = (gsize) c->in_channels * src.height * src.width;
  g_autoptr (GError) error = NULL;
  g_autofree int *ts = ddim_schedule_timesteps (model->schedule, src.steps, src.spacing, &error);
  if (ts == NULL)
    {
      cli_source_clear (&src);
      return cli_error (cmd, error);
    }
  int step = 0;
  while (step < src.steps - 1 && ts[step] > t)
    step++;
  g_autofree float *x_t = g_memdup2 (src.x, count * sizeof (float));
  if (step > 0)
    {
      g_autofree float *traj = g_new (float, (gsize) (src.steps + 1) * count);
      DdimRunOptions o;
      ddim_run_options_init (&o, model->schedule);
      o.steps = src.steps;
      o.spacing = src.spacing;
      o.trajectory = traj;
      rc = cli_run (cmd, "sample", ddim_sample, model, x_t, 1, src.height, src.width, &o, quiet);
      if (rc != CLI_EXIT_OK)
        {
          cli_source_clear (&src);
          return rc;
        }
      memcpy (x_t, traj + (gsize) step * count, count * sizeof (float));
    }

  DiscoverJob job = { 0 };
  job.model = model;
  job.x_t = x_t;
  job.height = src.height;
  job.width = src.width;
  job.t = ts[step];
  cli_source_clear (&src);
  ddim_discover_options_init (&job.options);
  job.options.k = k;
  job.options.iterations = iterations;
  job.options.seed = (guint64) seed;
  job.options.want_x = want_x;
  job.options.want_h = want_h;
  job.options.prefix = prefix;
  job.options.model_sha256 = model->weights_sha256;
  if (!quiet)
    fprintf (stderr, "ddim %s: Jacobian at t = %d, %d components\n", cmd, job.t, k);
  rc = cli_run_job (cmd, "discover", discover_job, &job, quiet);
  if (rc != CLI_EXIT_OK)
    return rc;
  g_autoptr (DdimDirectionSet) made = job.result;
  if (!quiet)
    {
      fprintf (stderr, "ddim %s: singular values", cmd);
      for (guint i = 0; i < ddim_direction_set_get_n (made); i += want_x && want_h ? 2 : 1)
        fprintf (stderr, " %.4g", ddim_direction_set_get_nth (made, i)->sigma);
      fprintf (stderr, "\n");
    }
  return save_merged (cmd, output, made, quiet);
}

/* ---- pca ---- */

typedef struct {
  DdimModel           *model;
  const float         *latents;
  int                  n, size, t_min, t_max;
  gboolean             pool;
  DdimRunOptions       run;
  DdimDiscoverOptions  options;
  DdimDirectionSet    *result;
} PcaJob;

static gboolean
pca_job (gpointer data, DdimProgressFunc progress, gpointer progress_data,
         GCancellable *cancellable, GError **error)
{
  PcaJob *j = data;
  j->options.progress = progress;
  j->options.progress_data = progress_data;
  j->options.cancellable = cancellable;
  j->result = ddim_discover_pca (j->model->unet, j->model->schedule, j->latents, j->n, j->size,
                                 j->size, &j->run, j->t_min, j->t_max, j->pool, &j->options,
                                 error);
  return j->result != NULL;
}

static int
cmd_pca (int argc, char **argv)
{
  const char *cmd = "directions pca";
  g_autofree char *output = NULL, *prefix = NULL, *spacing = NULL;
  int k = 8, samples = 64, steps = 50, t_min = -1, t_max = -1;
  gint64 seed = 0;
  gboolean pool = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
    { "components", 'k', 0, G_OPTION_ARG_INT, &k, "Number of components (default 8)", "K" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Directions file to add them to (created if missing; same names replaced) (required)",
      "FILE" },
    { "samples", 'n', 0, G_OPTION_ARG_INT, &samples,
      "Number of generated samples h is collected from (default 64)", "N" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed of the samples' noise (default 0)", "S" },
    { "t-min", 0, 0, G_OPTION_ARG_INT, &t_min,
      "Collect h at sampling steps with t >= T (default: half the training timesteps)", "T" },
    { "t-max", 0, 0, G_OPTION_ARG_INT, &t_max,
      "... and t <= T (default: the last training timestep)", "T" },
    { "pool", 0, 0, G_OPTION_ARG_NONE, &pool,
      "Average h over positions: [C] components that work at any image size", NULL },
    { "prefix", 0, 0, G_OPTION_ARG_STRING, &prefix,
      "Names are PREFIX-N; default 'pca' (also editable as component-N when no direction "
      "has that exact name)", "PREFIX" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps, "DDIM sampling steps (default 50)", "N" },
    { "spacing", 0, 0, G_OPTION_ARG_STRING, &spacing,
      "Timestep spacing: leading, trailing or linspace", "SPACING" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL]");
  g_option_context_set_summary (ctx,
      "Finds global h-space directions: the principal components of h (the UNet's\n"
      "mid-block output) over the sampling trajectories of N generated samples, at\n"
      "the steps with t in [t-min, t-max], centred per timestep. The recommended\n"
      "strength range is +-2 standard deviations along each component.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  if (!cli_parse_options (ctx, cmd, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (cmd, 0, &argc, &argv, &args, &rc))
    return rc;
  if (argc != 2)
    return cli_usage_error (cmd, "too many arguments");
  if (output == NULL)
    return cli_usage_error (cmd, "missing -o FILE");
  if (!cli_check_range (cmd, "-k", k, 1, 4096, &rc)
      || !cli_check_range (cmd, "--samples", samples, 2, 1000000, &rc)
      || !cli_check_range (cmd, "--steps", steps, 1, G_MAXINT, &rc))
    return rc;
  g_autoptr (DdimModel) model = cli_load_model (cmd, argv[1], &rc);
  if (model == NULL)
    return rc;
  PcaJob job = { 0 };
  ddim_run_options_init (&job.run, model->schedule);
  job.run.steps = steps;
  g_autoptr (GError) error = NULL;
  if (spacing && !ddim_spacing_from_string (spacing, &job.run.spacing, &error))
    return cli_usage_error (cmd, "--spacing: %s", error->message);
  if (steps > model->schedule->num_train_timesteps)
    return cli_usage_error (cmd, "--steps must be at most %d", model->schedule->num_train_timesteps);
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  gsize count = (gsize) c->in_channels * c->sample_size * c->sample_size;
  g_autofree float *latents = g_new (float, (gsize) samples * count);
  ddim_randn ((guint64) seed, latents, (gsize) samples * count);
  job.model = model;
  job.latents = latents;
  job.n = samples;
  job.size = c->sample_size;
  job.t_min = t_min;
  job.t_max = t_max;
  job.pool = pool;
  ddim_discover_options_init (&job.options);
  job.options.k = k;
  job.options.seed = (guint64) seed;
  job.options.prefix = prefix;
  job.options.model_sha256 = model->weights_sha256;
  rc = cli_run_job (cmd, "pca", pca_job, &job, quiet);
  if (rc != CLI_EXIT_OK)
    return rc;
  g_autoptr (DdimDirectionSet) made = job.result;
  return save_merged (cmd, output, made, quiet);
}

/* ---- dispatch ---- */

typedef struct {
  const char *name;
  int (*run) (int argc, char **argv);
  const char *summary;
} Sub;

static const Sub subs[] = {
  { "list", cmd_list, "List the directions of a model or a directions file" },
  { "fit", cmd_fit, "Fit an h-space direction from positive and negative images" },
  { "discover", cmd_discover, "Jacobian singular vectors of one image (x- and h-space)" },
  { "pca", cmd_pca, "Principal components of h over generated samples" },
  { "merge", cli_directions_merge, "Put the directions of several files into one" },
  { "set-range", cli_directions_set_range, "Record a direction's recommended strengths" },
};

static void
print_help (FILE *out)
{
  fprintf (out, "Usage: ddim directions SUBCOMMAND [OPTION…] [ARG…]\n\n"
                "Semantic directions for 'ddim edit', kept in safetensors files\n"
                "(MODEL/directions.safetensors by default).\n\nSubcommands:\n");
  for (gsize i = 0; i < G_N_ELEMENTS (subs); i++)
    fprintf (out, "  %-10s %s\n", subs[i].name, subs[i].summary);
  fprintf (out, "\nRun 'ddim directions SUBCOMMAND --help' for its options.\n");
}

int
cli_cmd_directions (int argc, char **argv)
{
  if (argc < 2)
    {
      print_help (stderr);
      return CLI_EXIT_USAGE;
    }
  if (g_str_equal (argv[1], "--help") || g_str_equal (argv[1], "-h")
      || g_str_equal (argv[1], "-?") || g_str_equal (argv[1], "help"))
    {
      print_help (stdout);
      return CLI_EXIT_OK;
    }
  for (gsize i = 0; i < G_N_ELEMENTS (subs); i++)
    if (g_str_equal (argv[1], subs[i].name))
      {
        g_autofree char *prgname = g_strconcat ("ddim directions ", subs[i].name, NULL);
        g_set_prgname (prgname);
        return subs[i].run (argc - 1, argv + 1);
      }
  return cli_usage_error ("directions", "unknown subcommand '%s' (list, fit, discover, pca, "
                          "merge, set-range)",
                          argv[1]);
}
