/* Loading a model folder of any family: diffusers (config.json), ermongroup
 * (config.yml and a .ckpt or .pth) or guided-diffusion (model_flags.txt and a .pt). */
#include <gio/gio.h>
#include <string.h>

#include "ddim/error.h"
#include "ddim/model.h"
#include "ddim/safetensors.h"
#include "model/family-private.h"

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

const char *
ddim_model_family_name (DdimModelFamily family)
{
  switch (family)
    {
    case DDIM_MODEL_FAMILY_ERMONGROUP: return "ermongroup";
    case DDIM_MODEL_FAMILY_ADM: return "adm";
    case DDIM_MODEL_FAMILY_DIFFUSERS:
    default: return "diffusers";
    }
}

const char *
ddim_weights_format_name (DdimWeightsFormat format)
{
  switch (format)
    {
    case DDIM_WEIGHTS_TORCH_ZIP: return "torch-zip";
    case DDIM_WEIGHTS_TORCH_LEGACY: return "torch-legacy";
    case DDIM_WEIGHTS_SAFETENSORS:
    default: return "safetensors";
    }
}

static gboolean
exists_in (const char *folder, const char *name)
{
  g_autofree char *p = g_build_filename (folder, name, NULL);
  return g_file_test (p, G_FILE_TEST_IS_REGULAR);
}

static gboolean
read_text (const char *folder, const char *name, char **text, gsize *len, GError **error)
{
  g_autofree char *p = g_build_filename (folder, name, NULL);
  g_autoptr (GError) local = NULL;
  if (!g_file_get_contents (p, text, len, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read %s: %s", p, local->message);
      return FALSE;
    }
  return TRUE;
}

/* Which family the folder holds, from its config file. */
static gboolean
detect_family (const char *folder, DdimModelFamily *family, GError **error)
{
  if (!g_file_test (folder, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "model folder %s does not exist (expected a diffusers UNet2DModel folder "
                   "with config.json and diffusion_pytorch_model.safetensors, or an "
                   "ermongroup config.yml or a guided-diffusion model_flags.txt beside a "
                   "checkpoint)", folder);
      return FALSE;
    }
  static const struct { const char *file; DdimModelFamily family; } kinds[] = {
    { "config.json", DDIM_MODEL_FAMILY_DIFFUSERS },
    { "config.yml", DDIM_MODEL_FAMILY_ERMONGROUP },
    { "model_flags.txt", DDIM_MODEL_FAMILY_ADM },
  };
  const char *found = NULL;
  for (guint i = 0; i < G_N_ELEMENTS (kinds); i++)
    if (exists_in (folder, kinds[i].file))
      {
        if (found)
          {
            g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                         "model folder %s has both %s and %s: keep the one of the model's "
                         "family", folder, found, kinds[i].file);
            return FALSE;
          }
        found = kinds[i].file;
        *family = kinds[i].family;
      }
  if (found == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "model folder %s has no config.json (diffusers), config.yml "
                   "(ermongroup/pesser/SDEdit) or model_flags.txt (guided-diffusion)", folder);
      return FALSE;
    }
  return TRUE;
}

static gboolean
read_family_config (const char *folder, DdimModelFamily family, DdimUNetConfig *config,
                    DdimSchedule **schedule, gboolean *has_scheduler_config,
                    DdimCheckpointLayout *layout, GError **error)
{
  g_autofree char *text = NULL;
  gsize len = 0;
  *layout = (DdimCheckpointLayout) { family, FALSE, FALSE };
  if (has_scheduler_config)
    *has_scheduler_config = FALSE;
  switch (family)
    {
    case DDIM_MODEL_FAMILY_ERMONGROUP:
      if (!read_text (folder, "config.yml", &text, &len, error))
        return FALSE;
      return ddim_ermongroup_config_parse (text, len, config, schedule, &layout->use_ema, error);
    case DDIM_MODEL_FAMILY_ADM:
      if (!read_text (folder, "model_flags.txt", &text, &len, error))
        return FALSE;
      return ddim_adm_flags_parse (text, len, config, schedule, &layout->new_attention_order,
                                   error);
    case DDIM_MODEL_FAMILY_DIFFUSERS:
    default:
      {
        g_autofree char *config_path = g_build_filename (folder, "config.json", NULL);
        g_autofree char *sched1 = g_build_filename (folder, "scheduler", "scheduler_config.json", NULL);
        g_autofree char *sched2 = g_build_filename (folder, "scheduler_config.json", NULL);
        if (!ddim_unet_config_load (config_path, config, error))
          return FALSE;
        if (schedule == NULL)
          return TRUE;
        gboolean has = TRUE;
        if (g_file_test (sched1, G_FILE_TEST_EXISTS))
          *schedule = ddim_schedule_load (sched1, error);
        else if (g_file_test (sched2, G_FILE_TEST_EXISTS))
          *schedule = ddim_schedule_load (sched2, error);
        else
          *schedule = ddim_schedule_new_default (), has = FALSE;
        if (has_scheduler_config)
          *has_scheduler_config = has;
        if (*schedule == NULL)
          return FALSE;
        /* A diffusers conversion of a learned-sigma model says so only in
         * its scheduler ("variance_type": "learned_range") and by twice
         * the input channels out. */
        if ((*schedule)->learned_variance && !config->learned_sigma
            && config->out_channels == 2 * config->in_channels)
          {
            config->learned_sigma = TRUE;
            config->out_channels /= 2;
          }
        return TRUE;
      }
    }
}

gboolean
ddim_model_load_config (const char *folder, DdimUNetConfig *config, DdimSchedule **schedule,
                        DdimModelFamily *family, GError **error)
{
  g_return_val_if_fail (folder != NULL && config != NULL, FALSE);
  DdimModelFamily fam;
  DdimCheckpointLayout layout;
  if (!detect_family (folder, &fam, error)
      || !read_family_config (folder, fam, config, schedule, NULL, &layout, error))
    return FALSE;
  if (family)
    *family = fam;
  return TRUE;
}

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(char *const *) a, *(char *const *) b);
}

/* The one file of the folder ending in one of @suffixes (NULL-terminated). */
static char *
find_checkpoint (const char *folder, const char *config_name, const char *const *suffixes,
                 const char *pattern, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_autoptr (GDir) dir = g_dir_open (folder, 0, &local);
  if (dir == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot list %s: %s", folder, local->message);
      return NULL;
    }
  g_autoptr (GPtrArray) hits = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  while ((name = g_dir_read_name (dir)) != NULL)
    for (int i = 0; suffixes[i]; i++)
      if (g_str_has_suffix (name, suffixes[i]))
        {
          g_autofree char *p = g_build_filename (folder, name, NULL);
          if (g_file_test (p, G_FILE_TEST_IS_REGULAR))
            g_ptr_array_add (hits, g_strdup (name));
        }
  if (hits->len == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "model folder %s has %s but no %s checkpoint", folder, config_name, pattern);
      return NULL;
    }
  if (hits->len > 1)
    {
      g_ptr_array_sort (hits, compare_names);
      g_ptr_array_add (hits, NULL);
      g_autofree char *list = g_strjoinv (", ", (char **) hits->pdata);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "model folder %s has several candidate weight files (%s): keep one", folder,
                   list);
      return NULL;
    }
  return g_build_filename (folder, g_ptr_array_index (hits, 0), NULL);
}

/* The weights of a diffusers folder, as diffusers picks them
 * (safetensors before .bin, single files before sharded ones). */
static char *
find_diffusers_weights (const char *folder, GError **error)
{
  static const char *names[] = {
    "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json",
  };
  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    if (exists_in (folder, names[i]))
      return g_build_filename (folder, names[i], NULL);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
               "model folder %s has no diffusion_pytorch_model.safetensors (nor .bin, nor a "
               "sharded index)", folder);
  return NULL;
}

DdimModel *
ddim_model_load (const char *folder, GError **error)
{
  g_return_val_if_fail (folder != NULL, NULL);
  DdimModelFamily family;
  if (!detect_family (folder, &family, error))
    return NULL;
  g_autoptr (DdimModel) m = g_new0 (DdimModel, 1);
  m->path = g_strdup (folder);
  m->family = family;
  DdimUNetConfig config;
  DdimCheckpointLayout layout;
  if (!read_family_config (folder, family, &config, &m->schedule, &m->has_scheduler_config,
                           &layout, error))
    return NULL;
  static const char *const ckpt_suffixes[] = { ".ckpt", ".pth", NULL };
  static const char *const pt_suffixes[] = { ".pt", NULL };
  g_autofree char *weights = family == DDIM_MODEL_FAMILY_ERMONGROUP
                             ? find_checkpoint (folder, "config.yml", ckpt_suffixes,
                                                "*.ckpt/*.pth", error)
                             : family == DDIM_MODEL_FAMILY_ADM
                             ? find_checkpoint (folder, "model_flags.txt", pt_suffixes, "*.pt",
                                                error)
                             : find_diffusers_weights (folder, error);
  if (weights == NULL)
    return NULL;
  g_autoptr (DdimWeightSource) src = ddim_weight_source_open (weights, layout.use_ema,
                                                              &m->weights_format, error);
  if (src == NULL)
    return NULL;
  m->weights_path = g_strdup (ddim_weight_source_first_path (src));
  g_autofree char *base = g_path_get_basename (m->weights_path);
  /* guided-diffusion builds a class-conditional model only with
   * --class_cond True (refused); a checkpoint with class embeddings under
   * other flags would not load there either. */
  if (family == DDIM_MODEL_FAMILY_ADM && ddim_weight_source_lookup (src, "label_emb.weight"))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "%s holds class embeddings (label_emb.weight): a class-conditional model, "
                   "which is not supported (and model_flags.txt says --class_cond False)", base);
      return NULL;
    }
  m->unet = ddim_unet_new_from_source (&config, src, &layout, base, error);
  if (m->unet == NULL)
    return NULL;
  m->weights_sha256 = ddim_file_sha256 (m->weights_path, error);
  if (m->weights_sha256 == NULL)
    return NULL;
  m->weights_dtype = ddim_weight_source_dtype (src);
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
  g_free (m->weights_path);
  g_free (m);
}
