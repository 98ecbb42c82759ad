/* Writing a model as a diffusers folder's files: what `ddim train` exports
 * and `ddim convert` produces. */
#include <errno.h>
#include <string.h>

#include <glib/gstdio.h>

#include "ddim/error.h"
#include "ddim/model.h"
#include "ddim/safetensors.h"

static gboolean
write_text (const char *dir, const char *name, const char *text, GError **error)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr (GError) local = NULL;
  if (!g_file_set_contents (path, text, -1, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot write %s: %s", path,
                   local->message);
      return FALSE;
    }
  return TRUE;
}

static int
compare_names (gconstpointer a, gconstpointer b, gpointer data)
{
  DdimUNet *u = data;
  return strcmp (ddim_unet_get_tensor (u, *(const guint *) a, NULL, NULL, NULL),
                 ddim_unet_get_tensor (u, *(const guint *) b, NULL, NULL, NULL));
}

static gboolean
write_weights (DdimUNet *u, gboolean f16, const char *const *metadata, const char *path,
               GError **error)
{
  guint n = ddim_unet_get_n_tensors (u);
  g_autoptr (GArray) sorted = g_array_sized_new (FALSE, FALSE, sizeof (guint), n);
  for (guint i = 0; i < n; i++)
    g_array_append_val (sorted, i);
  g_array_sort_with_data (sorted, compare_names, u);
  const guint *order = (const guint *) (gpointer) sorted->data;
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  for (guint i = 0; i < n; i++)
    {
      int ndim;
      gint64 shape[4];
      float *data;
      const char *name = ddim_unet_get_tensor (u, order[i], &ndim, shape, &data);
      if (f16)
        ddim_safetensors_writer_add_f16 (w, name, ndim, shape, data);
      else
        ddim_safetensors_writer_add_f32 (w, name, ndim, shape, data);
    }
  /* diffusers writes "format": "pt" into its safetensors files. */
  ddim_safetensors_writer_add_metadata (w, "format", "pt");
  for (const char *const *m = metadata; m && m[0] && m[1]; m += 2)
    ddim_safetensors_writer_add_metadata (w, m[0], m[1]);
  return ddim_safetensors_writer_save (w, path, error);
}

gboolean
ddim_model_write_files (const char *dir, DdimUNet *unet, const DdimUNetConfig *config,
                        const DdimSchedule *schedule, gboolean f16,
                        const char *const *metadata, GError **error)
{
  g_return_val_if_fail (dir != NULL && unet != NULL && config != NULL && schedule != NULL,
                        FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  g_autofree char *config_json = ddim_unet_config_to_json (config);
  g_autofree char *schedule_json = ddim_schedule_to_json (schedule);
  if (!write_text (dir, "config.json", config_json, error))
    return FALSE;
  g_autofree char *weights = g_build_filename (dir, DDIM_MODEL_WEIGHTS_FILE, NULL);
  if (!write_weights (unet, f16, metadata, weights, error))
    return FALSE;
  g_autofree char *sdir = g_build_filename (dir, "scheduler", NULL);
  if (g_mkdir (sdir, 0777) != 0)
    {
      int e = errno;
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot create %s: %s", sdir,
                   g_strerror (e));
      return FALSE;
    }
  return write_text (sdir, "scheduler_config.json", schedule_json, error);
}
