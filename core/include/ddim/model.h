/* A diffusers model folder: UNet config, weights and scheduler config. */
#pragma once

#include <glib.h>

#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

/* Where a model folder comes from (docs/torch-checkpoints-notes.md). */
typedef enum {
  DDIM_MODEL_FAMILY_DIFFUSERS,    /* config.json + diffusion_pytorch_model.{safetensors,bin} */
  DDIM_MODEL_FAMILY_ERMONGROUP,   /* *.ckpt / *.pth + config.yml (ermongroup, pesser, SDEdit) */
  DDIM_MODEL_FAMILY_ADM           /* *.pt + model_flags.txt (openai/guided-diffusion) */
} DdimModelFamily;

typedef enum {
  DDIM_WEIGHTS_SAFETENSORS,
  DDIM_WEIGHTS_TORCH_ZIP,         /* torch.save, torch >= 1.6 */
  DDIM_WEIGHTS_TORCH_LEGACY       /* torch.save, pre-1.6 format */
} DdimWeightsFormat;

typedef struct {
  char         *path;             /* the folder */
  DdimModelFamily   family;
  DdimWeightsFormat weights_format;
  char         *weights_path;     /* the weights file (the first shard when sharded) */
  DdimUNet     *unet;
  DdimSchedule *schedule;
  char         *weights_sha256;   /* hex SHA-256 of the weights file */
  char         *weights_dtype;    /* "F32", "F16", "BF16" or "mixed" */
  gboolean      has_scheduler_config;
} DdimModel;

/* Loads a model folder; the family is told by its config file:
 *  - config.json (diffusers): diffusion_pytorch_model.safetensors, else
 *    its .safetensors.index.json shards, else diffusion_pytorch_model.bin,
 *    else its .bin.index.json shards; the scheduler config from
 *    FOLDER/scheduler/scheduler_config.json, else FOLDER/scheduler_config.json,
 *    else DDPM's defaults;
 *  - config.yml (ermongroup/ddim, pesser, SDEdit): the one *.ckpt or *.pth
 *    (the EMA weights of a training checkpoint when model.ema is true);
 *  - model_flags.txt (guided-diffusion): the one *.pt.
 * More than one config file, no checkpoint or several candidates, a bad
 * config (the error names the file, field and value) or a checkpoint that
 * does not fit are errors. weights_path is the (first) weights file,
 * weights_sha256 its hash. */
DdimModel *ddim_model_load (const char *folder, GError **error);
void       ddim_model_free (DdimModel *model);

/* Reads only the architecture and the schedule of a model folder of any
 * family (no weights); @schedule and @family may be NULL. */
gboolean   ddim_model_load_config (const char *folder, DdimUNetConfig *config,
                                   DdimSchedule **schedule, DdimModelFamily *family,
                                   GError **error);

/* "diffusers", "ermongroup", "adm" / "safetensors", "torch-zip", "torch-legacy". */
const char *ddim_model_family_name (DdimModelFamily family);
const char *ddim_weights_format_name (DdimWeightsFormat format);

/* Family configs parsed from memory (for tests and fuzzing; the loaders
 * read the files). ermongroup's config.yml (YAML, libyaml): the UNet
 * config, the schedule (may be NULL) and model.ema (may be NULL). */
gboolean   ddim_ermongroup_config_parse (const char *text, gsize length, DdimUNetConfig *config,
                                         DdimSchedule **schedule, gboolean *use_ema,
                                         GError **error);
/* guided-diffusion's model_flags.txt ("--flag value ..."; unset flags take
 * model_and_diffusion_defaults); @new_attention_order may be NULL.
 * Class-conditional models are DDIM_ERROR_UNSUPPORTED. */
gboolean   ddim_adm_flags_parse (const char *text, gsize length, DdimUNetConfig *config,
                                 DdimSchedule **schedule, gboolean *new_attention_order,
                                 GError **error);

/* The weights file of a diffusers folder as this library writes it. */
#define DDIM_MODEL_WEIGHTS_FILE "diffusion_pytorch_model.safetensors"

/* Writes a diffusers model folder's files into @dir (an existing, empty
 * folder): config.json (ddim_unet_config_to_json of @config),
 * DDIM_MODEL_WEIGHTS_FILE (every parameter of @unet under its diffusers
 * name, sorted by name as safetensors' torch writer orders them, F32 or,
 * with @f16, F16; metadata "format": "pt" and the NULL-terminated
 * key, value pairs of @metadata, which may be NULL) and
 * scheduler/scheduler_config.json (ddim_schedule_to_json). Not atomic by
 * itself: callers write into a temporary folder and rename it. */
gboolean   ddim_model_write_files (const char *dir, DdimUNet *unet, const DdimUNetConfig *config,
                                   const DdimSchedule *schedule, gboolean f16,
                                   const char *const *metadata, GError **error);

/* Hex SHA-256 of a file's contents (streamed). */
char      *ddim_file_sha256 (const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimModel, ddim_model_free)

G_END_DECLS
