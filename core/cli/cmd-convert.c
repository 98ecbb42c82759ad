/* ddim convert MODEL -o DIR: a model folder of any family (diffusers,
 * ermongroup, ADM; safetensors or torch.save weights) rewritten as a
 * diffusers safetensors folder that computes the same numbers and needs
 * no pickle reader (it loads at least as fast: as fast as a plain torch
 * state dict, about twice as fast as a training checkpoint carrying
 * optimizer state, by callgrind on the fixtures). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib/gstdio.h>

#include "cli.h"
#include "ddim/directions.h"
#include "ddim/encoder.h"
#include "ddim/safetensors.h"

#define CMD "convert"
#define WEIGHTS_NAME DDIM_MODEL_WEIGHTS_FILE
#define SCHEDULER_DIR "scheduler"
#define SCHEDULER_NAME "scheduler_config.json"

/* The entries convert writes; --force replaces a folder holding nothing
 * else (never a folder with files of the user's). */
static gboolean
is_own_entry (const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  if (g_file_test (path, G_FILE_TEST_IS_SYMLINK))
    return FALSE;
  if (g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      if (!g_str_equal (name, SCHEDULER_DIR))
        return FALSE;
      g_autoptr (GDir) d = g_dir_open (path, 0, NULL);
      const char *sub;
      while (d && (sub = g_dir_read_name (d)))
        {
          g_autofree char *sp = g_build_filename (path, sub, NULL);
          if (!g_str_equal (sub, SCHEDULER_NAME) || !g_file_test (sp, G_FILE_TEST_IS_REGULAR)
              || g_file_test (sp, G_FILE_TEST_IS_SYMLINK))
            return FALSE;
        }
      return d != NULL;
    }
  return g_str_equal (name, "config.json") || g_str_equal (name, WEIGHTS_NAME)
         || g_str_equal (name, DDIM_DIRECTIONS_FILE);
}

/* Removes what convert writes in @dir, then @dir (which must then be
 * empty: nothing else is ever deleted). */
static void
remove_own_tree (const char *dir)
{
  const char *files[] = { "config.json", WEIGHTS_NAME, DDIM_DIRECTIONS_FILE,
                          SCHEDULER_DIR G_DIR_SEPARATOR_S SCHEDULER_NAME };
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *p = g_build_filename (dir, files[i], NULL);
      g_unlink (p);
    }
  g_autofree char *sd = g_build_filename (dir, SCHEDULER_DIR, NULL);
  g_rmdir (sd);
  g_rmdir (dir);
}

/* MODEL/directions.safetensors, if any, for the converted weights: the
 * directions name the weights they were made for by SHA-256, and the new
 * file computes the same numbers, so those of the source model are
 * re-keyed to the new hash (others are kept as they are). Returns the
 * number re-keyed, or -1 on error. */
static int
convert_directions (DdimModel *model, const char *new_sha256, const char *out_dir,
                    GError **error)
{
  g_autofree char *src = g_build_filename (model->path, DDIM_DIRECTIONS_FILE, NULL);
  if (!g_file_test (src, G_FILE_TEST_EXISTS))
    return 0;
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_load (src, error);
  if (set == NULL)
    return -1;
  int rekeyed = 0;
  for (guint i = 0; i < ddim_direction_set_get_n (set); i++)
    {
      DdimDirection *d = ddim_direction_set_get_nth (set, i);
      if (d->model_sha256[0] == '\0'
          || g_ascii_strcasecmp (d->model_sha256, model->weights_sha256) == 0)
        {
          g_free (d->model_sha256);
          d->model_sha256 = g_strdup (new_sha256);
          rekeyed++;
        }
    }
  g_autofree char *dst = g_build_filename (out_dir, DDIM_DIRECTIONS_FILE, NULL);
  if (!ddim_direction_set_save (set, dst, error))
    return -1;
  return rekeyed;
}

static gboolean
mismatch (GError **error, const char *what)
{
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
               "the converted folder does not reproduce the source model: %s differ", what);
  return FALSE;
}

/* Loads the written folder back and compares it with @model: the same
 * architecture, schedule and (F32, or F16 from F16) parameters bit for bit,
 * hence the same outputs. */
static gboolean
verify (DdimModel *model, const char *dir, gboolean exact_weights, GError **error)
{
  g_autoptr (DdimModel) back = ddim_model_load (dir, error);
  if (back == NULL)
    return FALSE;
  g_autofree char *c1 = ddim_unet_config_to_json (ddim_unet_get_config (model->unet));
  g_autofree char *c2 = ddim_unet_config_to_json (ddim_unet_get_config (back->unet));
  if (!g_str_equal (c1, c2))
    return mismatch (error, "the UNet configs");
  g_autofree char *s1 = ddim_schedule_to_json (model->schedule);
  g_autofree char *s2 = ddim_schedule_to_json (back->schedule);
  const DdimSchedule *a = model->schedule, *b = back->schedule;
  if (!g_str_equal (s1, s2) || a->num_train_timesteps != b->num_train_timesteps
      || memcmp (a->alphas_cumprod, b->alphas_cumprod,
                 sizeof (float) * a->num_train_timesteps) != 0)
    return mismatch (error, "the noise schedules");
  guint n = ddim_unet_get_n_tensors (model->unet);
  if (n != ddim_unet_get_n_tensors (back->unet)
      || ddim_unet_get_n_params (model->unet) != ddim_unet_get_n_params (back->unet))
    return mismatch (error, "the parameter counts");
  for (guint i = 0; i < n; i++)
    {
      int nd1 = 0, nd2 = 0;
      gint64 sh1[4] = { 0 }, sh2[4] = { 0 };
      float *d1 = NULL, *d2 = NULL;
      const char *n1 = ddim_unet_get_tensor (model->unet, i, &nd1, sh1, &d1);
      const char *n2 = ddim_unet_get_tensor (back->unet, i, &nd2, sh2, &d2);
      if (!g_str_equal (n1, n2) || nd1 != nd2 || memcmp (sh1, sh2, sizeof sh1) != 0)
        return mismatch (error, "the parameter tables");
      gsize count = 1;
      for (int d = 0; d < nd1; d++)
        count *= (gsize) sh1[d];
      if (exact_weights && memcmp (d1, d2, count * sizeof (float)) != 0)
        {
          g_autofree char *what = g_strdup_printf ("the values of parameter %s", n1);
          return mismatch (error, what);
        }
    }
  return TRUE;
}

static gboolean
write_folder (DdimModel *model, gboolean f16, const char *dir, int *n_directions,
              GError **error)
{
  const char *metadata[] = {
    "converted_from_sha256", model->weights_sha256,
    "converted_from_family", ddim_model_family_name (model->family),
    NULL,
  };
  if (!ddim_model_write_files (dir, model->unet, ddim_unet_get_config (model->unet),
                               model->schedule, f16, metadata, error))
    return FALSE;
  g_autofree char *weights = g_build_filename (dir, WEIGHTS_NAME, NULL);
  g_autofree char *sha = ddim_file_sha256 (weights, error);
  if (sha == NULL)
    return FALSE;
  *n_directions = convert_directions (model, sha, dir, error);
  return *n_directions >= 0;
}

/* Moves the finished @tmp folder to @target, putting an existing @target
 * (empty, or holding only what convert writes) aside first. */
static gboolean
install_folder (const char *tmp, const char *target, const char *parent, const char *base,
                GError **error)
{
  if (!g_file_test (target, G_FILE_TEST_EXISTS))
    {
      if (g_rename (tmp, target) == 0)
        return TRUE;
      int e = errno;
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot create %s: %s", target,
                   g_strerror (e));
      return FALSE;
    }
  g_autofree char *old_name = g_strdup_printf (".%s.old-XXXXXX", base);
  g_autofree char *old = g_build_filename (parent, old_name, NULL);
  if (g_mkdtemp_full (old, 0777) == NULL || g_rename (target, old) != 0)
    {
      int e = errno;
      g_rmdir (old);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot replace %s: %s", target,
                   g_strerror (e));
      return FALSE;
    }
  if (g_rename (tmp, target) != 0)
    {
      int e = errno;
      g_rename (old, target);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot replace %s: %s", target,
                   g_strerror (e));
      return FALSE;
    }
  remove_own_tree (old);
  return TRUE;
}

/* Why @target (@shown in messages) cannot be written (newly allocated), or
 * NULL. */
static char *
check_target (const char *target, const char *shown, const char *source, gboolean force)
{
  if (!g_file_test (target, G_FILE_TEST_EXISTS))
    return NULL;
  if (!g_file_test (target, G_FILE_TEST_IS_DIR))
    return g_strdup_printf ("%s exists and is not a folder", shown);
  g_autofree char *real_target = realpath (target, NULL);
  g_autofree char *real_source = realpath (source, NULL);
  if (real_target && real_source && g_str_equal (real_target, real_source))
    return g_strdup_printf ("%s is the source model itself; write the converted model to "
                            "another folder", shown);
  g_autoptr (GError) local = NULL;
  g_autoptr (GDir) d = g_dir_open (target, 0, &local);
  if (d == NULL)
    return g_strdup_printf ("cannot read %s: %s", shown, local->message);
  const char *name;
  while ((name = g_dir_read_name (d)))
    {
      if (!force)
        return g_strdup_printf ("%s exists and is not empty; pass --force to replace a "
                                "model folder written by 'ddim convert'", shown);
      if (!is_own_entry (target, name))
        return g_strdup_printf ("%s holds %s, which 'ddim convert' does not write; --force "
                                "only replaces a folder it wrote (remove or move it "
                                "yourself)", shown, name);
    }
  return NULL;
}

int
cli_cmd_convert (int argc, char **argv)
{
  g_autofree char *output = NULL;
  g_autofree char *dtype_str = NULL;
  gboolean force = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "The folder to write (required); its parent must exist", "DIR" },
    { "force", 0, 0, G_OPTION_ARG_NONE, &force,
      "Replace DIR when it holds a model folder written by 'ddim convert'", NULL },
    { "dtype", 0, 0, G_OPTION_ARG_STRING, &dtype_str,
      "Weights precision: f32 (default: the same numbers as MODEL) or f16 (half the "
      "size; the same numbers only when MODEL's weights are F16)", "f32|f16" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No summary on stdout", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL]");
  g_option_context_set_summary (ctx,
      "Writes MODEL (a diffusers, ermongroup or ADM folder, with safetensors or\n"
      "PyTorch weights) as a diffusers folder: config.json,\n"
      "diffusion_pytorch_model.safetensors and scheduler/scheduler_config.json,\n"
      "plus MODEL's directions.safetensors re-keyed to the new weights. The\n"
      "result loads at least as fast and, with F32 weights, gives bit-identical outputs;\n"
      "convert checks that by loading it back. The folder appears complete or\n"
      "not at all. A learned encoder (MODEL/encoder) is not carried over: it is\n"
      "tied to the source weights' hash; retrain it with 'ddim train-encoder'.");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  g_auto (GStrv) args = NULL;
  if (!cli_parse_model_only (ctx, CMD, &argc, &argv, &args, &rc))
    return rc;
  if (output == NULL || output[0] == '\0')
    return cli_usage_error (CMD, "missing -o DIR");
  gboolean f16 = FALSE;
  if (dtype_str && g_ascii_strcasecmp (dtype_str, "f16") == 0)
    f16 = TRUE;
  else if (dtype_str && g_ascii_strcasecmp (dtype_str, "f32") != 0)
    return cli_usage_error (CMD, "--dtype must be f32 or f16, not '%s'", dtype_str);

  g_autofree char *canon = g_canonicalize_filename (output, NULL);
  g_autofree char *parent = g_path_get_dirname (canon);
  g_autofree char *base = g_path_get_basename (canon);
  if (!g_file_test (parent, G_FILE_TEST_IS_DIR))
    return cli_fail (CMD, "cannot write %s: folder %s does not exist", output, parent);
  g_autofree char *problem = check_target (canon, output, argv[1], force);
  if (problem)
    return cli_fail (CMD, "%s", problem);

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;

  g_autofree char *tmp_name = g_strdup_printf (".%s.tmp-XXXXXX", base);
  g_autofree char *tmp = g_build_filename (parent, tmp_name, NULL);
  if (g_mkdtemp_full (tmp, 0777) == NULL)
    {
      int e = errno;
      return cli_fail (CMD, "cannot write %s: cannot create a folder in %s: %s", output, parent,
                       g_strerror (e));
    }
  g_autoptr (GError) error = NULL;
  int n_directions = 0;
  gboolean exact = !f16 || g_str_equal (model->weights_dtype, "F16");
  if (!write_folder (model, f16, tmp, &n_directions, &error)
      || !verify (model, tmp, exact, &error)
      || !install_folder (tmp, canon, parent, base, &error))
    {
      remove_own_tree (tmp);
      return cli_error (CMD, error);
    }

  if (!quiet)
    {
      g_autofree char *np = cli_group_thousands (ddim_unet_get_n_params (model->unet));
      printf ("wrote %s: %s parameters as %s (from %s, %s %s)%s\n", output, np,
              f16 ? "F16" : "F32", ddim_model_family_name (model->family),
              ddim_weights_format_name (model->weights_format), model->weights_dtype,
              exact ? ", outputs bit-identical" : "");
      if (n_directions > 0)
        printf ("%d direction(s) re-keyed to the new weights\n", n_directions);
    }
  g_autofree char *encoder = g_build_filename (model->path, DDIM_ENCODER_DIR_NAME, NULL);
  if (g_file_test (encoder, G_FILE_TEST_IS_DIR))
    fprintf (stderr, "ddim %s: note: %s was not copied (an encoder is tied to the source "
             "weights); retrain it for the new folder with 'ddim train-encoder'\n", CMD,
             encoder);
  return CLI_EXIT_OK;
}
