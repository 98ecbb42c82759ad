/* Loading a diffusers model folder. */
#include <gio/gio.h>

#include "ddim/error.h"
#include "ddim/model.h"
#include "ddim/safetensors.h"

char *
ddim_file_sha256 (const char *path, GError **error)
{
  g_autoptr (GFile) file = g_file_new_for_path (path);
  g_autoptr (GError) local = NULL;
  g_autoptr (GFileInputStream) in = g_file_read (file, NULL, &local);
  if (in == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read %s: %s", path, local->message);
      return NULL;
    }
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_autofree guint8 *buf = g_malloc (1 << 20);
  for (;;)
    {
      gssize got = g_input_stream_read (G_INPUT_STREAM (in), buf, 1 << 20, NULL, &local);
      if (got < 0)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read %s: %s", path,
                       local->message);
          return NULL;
        }
      if (got == 0)
        break;
      g_checksum_update (sum, buf, got);
    }
  return g_strdup (g_checksum_get_string (sum));
}

static char *
weights_dtype (const char *path)
{
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, NULL);
  if (st == NULL)
    return g_strdup ("unknown");
  const char *first = NULL;
  for (guint i = 0; i < ddim_safetensors_get_n_tensors (st); i++)
    {
      const char *d = ddim_dtype_name (ddim_safetensors_get_info_nth (st, i)->dtype);
      if (first == NULL)
        first = d;
      else if (!g_str_equal (first, d))
        return g_strdup ("mixed");
    }
  return g_strdup (first ? first : "none");
}

DdimModel *
ddim_model_load (const char *folder, GError **error)
{
  g_return_val_if_fail (folder != NULL, NULL);
  if (!g_file_test (folder, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "model folder %s does not exist (expected a diffusers UNet2DModel folder "
                   "with config.json and diffusion_pytorch_model.safetensors)", folder);
      return NULL;
    }
  g_autofree char *config_path = g_build_filename (folder, "config.json", NULL);
  g_autofree char *weights_path = g_build_filename (folder, "diffusion_pytorch_model.safetensors", NULL);
  g_autofree char *sched1 = g_build_filename (folder, "scheduler", "scheduler_config.json", NULL);
  g_autofree char *sched2 = g_build_filename (folder, "scheduler_config.json", NULL);

  DdimUNetConfig config;
  if (!ddim_unet_config_load (config_path, &config, error))
    return NULL;
  if (!g_file_test (weights_path, G_FILE_TEST_EXISTS))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "model folder %s has no diffusion_pytorch_model.safetensors", folder);
      return NULL;
    }
  g_autoptr (DdimModel) m = g_new0 (DdimModel, 1);
  m->path = g_strdup (folder);
  if (g_file_test (sched1, G_FILE_TEST_EXISTS))
    m->schedule = ddim_schedule_load (sched1, error), m->has_scheduler_config = TRUE;
  else if (g_file_test (sched2, G_FILE_TEST_EXISTS))
    m->schedule = ddim_schedule_load (sched2, error), m->has_scheduler_config = TRUE;
  else
    m->schedule = ddim_schedule_new_default ();
  if (m->schedule == NULL)
    return NULL;
  m->unet = ddim_unet_new_from_safetensors (&config, weights_path, error);
  if (m->unet == NULL)
    return NULL;
  m->weights_sha256 = ddim_file_sha256 (weights_path, error);
  if (m->weights_sha256 == NULL)
    return NULL;
  m->weights_dtype = weights_dtype (weights_path);
  return g_steal_pointer (&m);
}

void
ddim_model_free (DdimModel *m)
{
  if (m == NULL)
    return;
  g_free (m->path);
  ddim_unet_free (m->unet);
  ddim_schedule_free (m->schedule);
  g_free (m->weights_sha256);
  g_free (m->weights_dtype);
  g_free (m);
}
