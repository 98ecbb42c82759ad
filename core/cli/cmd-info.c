/* ddim info MODEL: configuration, weights and schedule of a model folder. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "cli.h"

#define CMD "info"

static void
kv (const char *key, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
kv (const char *key, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  g_autofree char *value = g_strdup_vprintf (format, ap);
  va_end (ap);
  g_autofree char *k = g_strconcat (key, ":", NULL);
  printf ("%-24s %s\n", k, value);
}

static const char *
yes_no (gboolean b)
{
  return b ? "yes" : "no";
}

static const char *
bool_str (gboolean b)
{
  return b ? "true" : "false";
}

/* The scheduler config file the model was loaded with (same search order as
 * ddim_model_load), relative to the folder, or NULL. */
static char *
scheduler_config_file (const DdimModel *model)
{
  if (!model->has_scheduler_config)
    return NULL;
  const char *candidates[] = { "scheduler/scheduler_config.json", "scheduler_config.json" };
  for (gsize i = 0; i < G_N_ELEMENTS (candidates); i++)
    {
      g_autofree char *p = g_build_filename (model->path, candidates[i], NULL);
      if (g_file_test (p, G_FILE_TEST_EXISTS))
        return g_strdup (candidates[i]);
    }
  /* The other families keep the schedule beside the architecture. */
  switch (model->family)
    {
    case DDIM_MODEL_FAMILY_ERMONGROUP: return g_strdup ("config.yml");
    case DDIM_MODEL_FAMILY_ADM: return g_strdup ("model_flags.txt");
    case DDIM_MODEL_FAMILY_DIFFUSERS:
    default: return g_strdup ("(unknown)");
    }
}

static goffset
file_size (const char *path)
{
  GStatBuf st;
  return g_stat (path, &st) == 0 ? (goffset) st.st_size : -1;
}

static void
print_text (const DdimModel *m)
{
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  const DdimSchedule *s = m->schedule;
  int f = ddim_unet_config_size_factor (c);

  kv ("model", "%s", m->path);
  kv ("family", "%s", ddim_model_family_name (m->family));
  kv ("sample size", "%dx%d (sizes must be multiples of %d)", c->sample_size, c->sample_size, f);
  if (c->learned_sigma)
    kv ("channels", "%d in, %d out (+ %d of a learned variance, not computed)", c->in_channels,
        c->out_channels, c->out_channels);
  else
    kv ("channels", "%d in, %d out", c->in_channels, c->out_channels);
  kv ("center input sample", "%s", yes_no (c->center_input_sample));
  kv ("levels", "%d", c->n_levels);
  for (int i = 0; i < c->n_levels; i++)
    {
      g_autofree char *key = g_strdup_printf ("  level %d", i);
      gboolean down_attn = c->down_blocks[i] == DDIM_BLOCK_ATTENTION;
      /* up_block_types run from the deepest level up. */
      gboolean up_attn = c->up_blocks[c->n_levels - 1 - i] == DDIM_BLOCK_ATTENTION;
      kv (key, "%d channels, %s / %s", c->block_out_channels[i],
          down_attn ? "AttnDownBlock2D" : "DownBlock2D", up_attn ? "AttnUpBlock2D" : "UpBlock2D");
    }
  kv ("mid block", "%s, output scale factor %g",
      c->add_attention ? "resnet, attention, resnet" : "resnet, resnet",
      c->mid_block_scale_factor);
  kv ("layers per block", "%d", c->layers_per_block);
  if (c->attention_head_dim > 0)
    kv ("attention head dim", "%d", c->attention_head_dim);
  else
    kv ("attention head dim", "one head per block");
  if (c->attn_norm_num_groups > 0)
    kv ("norm groups", "%d (attention: %d), eps %g", c->norm_num_groups,
        c->attn_norm_num_groups, c->norm_eps);
  else
    kv ("norm groups", "%d, eps %g", c->norm_num_groups, c->norm_eps);
  kv ("time embedding", "positional, %d sinusoids -> MLP of width %d",
      c->block_out_channels[0], ddim_unet_config_temb_dim (c));
  kv ("  flip_sin_to_cos", "%s", bool_str (c->flip_sin_to_cos));
  kv ("  freq_shift", "%g", c->freq_shift);
  kv ("time scale shift", "%s", c->scale_shift ? "scale_shift" : "default");
  kv ("downsample padding", "%d", c->downsample_padding);
  /* How levels change resolution (guided-diffusion's resblock_updown, or
   * ermongroup's resamp_with_conv false). */
  kv ("resampling", "%s down, %s up",
      c->downsample_type == DDIM_RESAMPLE_RESNET ? "resnet"
      : c->resample_with_conv ? "conv" : "average pooling",
      c->upsample_type == DDIM_RESAMPLE_RESNET ? "resnet"
      : c->resample_with_conv ? "conv" : "nearest");

  gsize n_params = ddim_unet_get_n_params (m->unet);
  g_autofree char *np = cli_group_thousands (n_params);
  kv ("parameters", "%s (%.1f MiB as float32)", np, n_params * 4.0 / (1024.0 * 1024.0));
  goffset size = file_size (m->weights_path);
  if (size >= 0)
    kv ("weights file", "%s (%.1f MiB)", m->weights_path, size / (1024.0 * 1024.0));
  else
    kv ("weights file", "%s", m->weights_path);
  kv ("weights format", "%s", ddim_weights_format_name (m->weights_format));
  kv ("weights dtype", "%s", m->weights_dtype);
  kv ("weights sha256", "%s", m->weights_sha256);

  printf ("schedule:\n");
  kv ("  timesteps (T)", "%d", s->num_train_timesteps);
  if (s->beta_schedule == DDIM_BETA_SQUAREDCOS_CAP_V2)
    kv ("  betas", "%s", ddim_beta_schedule_to_string (s->beta_schedule));
  else
    kv ("  betas", "%s, %g .. %g", ddim_beta_schedule_to_string (s->beta_schedule),
        s->beta_start, s->beta_end);
  kv ("  prediction type", "%s", ddim_prediction_to_string (s->prediction));
  kv ("  timestep spacing", "%s", ddim_spacing_to_string (s->spacing));
  kv ("  steps offset", "%d", s->steps_offset);
  kv ("  set alpha to one", "%s", bool_str (s->set_alpha_to_one));
  kv ("  alphas arithmetic", "%s",
      s->arithmetic == DDIM_ALPHAS_FLOAT64 ? "float64 (guided-diffusion)"
      : s->arithmetic == DDIM_ALPHAS_FLOAT64_BETAS ? "float64 betas (ermongroup)"
      : "float32 (diffusers)");
  if (s->clip_sample)
    kv ("  clip sample", "true (range %g)", s->clip_sample_range);
  else
    kv ("  clip sample", "false");
  g_autofree char *sched_file = scheduler_config_file (m);
  if (sched_file)
    kv ("  scheduler config", "from file %s", sched_file);
  else
    kv ("  scheduler config", "none (DDPM defaults)");
}

static JsonNode *
parse_json (const char *text)
{
  g_autoptr (GError) error = NULL;
  JsonNode *node = json_from_string (text, &error);
  if (node == NULL)
    node = json_node_init_null (json_node_alloc ());
  return node;
}

static void
print_json (const DdimModel *m)
{
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autofree char *config_json = ddim_unet_config_to_json (c);
  g_autofree char *schedule_json = ddim_schedule_to_json (m->schedule);
  g_autofree char *wfile = g_path_get_basename (m->weights_path);
  g_autofree char *sched_file = scheduler_config_file (m);

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "path");
  json_builder_add_string_value (b, m->path);
  json_builder_set_member_name (b, "family");
  json_builder_add_string_value (b, ddim_model_family_name (m->family));
  json_builder_set_member_name (b, "config");
  json_builder_add_value (b, parse_json (config_json));
  json_builder_set_member_name (b, "size_factor");
  json_builder_add_int_value (b, ddim_unet_config_size_factor (c));
  json_builder_set_member_name (b, "n_params");
  json_builder_add_int_value (b, (gint64) ddim_unet_get_n_params (m->unet));
  json_builder_set_member_name (b, "weights");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "file");
  json_builder_add_string_value (b, wfile);
  json_builder_set_member_name (b, "format");
  json_builder_add_string_value (b, ddim_weights_format_name (m->weights_format));
  json_builder_set_member_name (b, "dtype");
  json_builder_add_string_value (b, m->weights_dtype);
  json_builder_set_member_name (b, "sha256");
  json_builder_add_string_value (b, m->weights_sha256);
  json_builder_set_member_name (b, "bytes");
  json_builder_add_int_value (b, file_size (m->weights_path));
  json_builder_end_object (b);
  json_builder_set_member_name (b, "scheduler_config");
  json_builder_add_value (b, parse_json (schedule_json));
  json_builder_set_member_name (b, "scheduler_config_file");
  if (sched_file)
    json_builder_add_string_value (b, sched_file);
  else
    json_builder_add_null_value (b);
  json_builder_end_object (b);

  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autofree char *text = json_to_string (root, TRUE);
  printf ("%s\n", text);
}

int
cli_cmd_info (int argc, char **argv)
{
  gboolean as_json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &as_json, "Print JSON (config.json and "
      "scheduler_config.json as libddim reads them, plus weights facts)", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL]");
  g_option_context_set_summary (ctx,
      "Shows the family, UNet configuration, parameter count, weights (file,\n"
      "format, dtype, SHA-256) and noise schedule of a model folder: diffusers\n"
      "(config.json), ermongroup/pesser/SDEdit (config.yml and a .ckpt/.pth) or\n"
      "OpenAI ADM (model_flags.txt and a .pt).");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  g_auto (GStrv) args = NULL;
  if (!cli_parse_model_only (ctx, CMD, &argc, &argv, &args, &rc))
    return rc;

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  if (as_json)
    print_json (model);
  else
    print_text (model);
  return CLI_EXIT_OK;
}
