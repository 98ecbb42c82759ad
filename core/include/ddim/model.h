/* A diffusers model folder: UNet config, weights and scheduler config. */
#pragma once

#include <glib.h>

#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

typedef struct {
  char         *path;             /* the folder */
  DdimUNet     *unet;
  DdimSchedule *schedule;
  char         *weights_sha256;   /* hex SHA-256 of the weights file */
  char         *weights_dtype;    /* "F32", "F16", "BF16" or "mixed" */
  gboolean      has_scheduler_config;
} DdimModel;

/* Loads FOLDER/config.json, FOLDER/diffusion_pytorch_model.safetensors and
 * the scheduler config (FOLDER/scheduler/scheduler_config.json, else
 * FOLDER/scheduler_config.json, else DDPM's defaults). */
DdimModel *ddim_model_load (const char *folder, GError **error);
void       ddim_model_free (DdimModel *model);

/* Hex SHA-256 of a file's contents (streamed). */
char      *ddim_file_sha256 (const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimModel, ddim_model_free)

G_END_DECLS
