/* config.json of a diffusers UNet2DModel. Defaults are diffusers' own. */
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "ddim/config.h"
#include "ddim/error.h"
#include "ddim/json.h"

static gboolean
member_is_null (JsonObject *o, const char *name)
{
  JsonNode *n = json_object_get_member (o, name);
  return n == NULL || JSON_NODE_HOLDS_NULL (n);
}

static gboolean
get_int (JsonObject *o, const char *name, int def, int *out, GError **error)
{
  if (member_is_null (o, name))
    {
      *out = def;
      return TRUE;
    }
  JsonNode *n = json_object_get_member (o, name);
  if (JSON_NODE_TYPE (n) != JSON_NODE_VALUE || json_node_get_value_type (n) == G_TYPE_STRING
      || json_node_get_value_type (n) == G_TYPE_BOOLEAN)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "config.json: field '%s' must be a number", name);
      return FALSE;
    }
  double v = json_node_get_double (n);
  if (v != floor (v) || v < -1e9 || v > 1e9)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "config.json: field '%s' must be an integer, not %g", name, v);
      return FALSE;
    }
  *out = (int) v;
  return TRUE;
}

static gboolean
get_double (JsonObject *o, const char *name, double def, double *out, GError **error)
{
  if (member_is_null (o, name))
    {
      *out = def;
      return TRUE;
    }
  JsonNode *n = json_object_get_member (o, name);
  if (JSON_NODE_TYPE (n) != JSON_NODE_VALUE || json_node_get_value_type (n) == G_TYPE_STRING
      || json_node_get_value_type (n) == G_TYPE_BOOLEAN)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "config.json: field '%s' must be a number", name);
      return FALSE;
    }
  *out = json_node_get_double (n);
  return TRUE;
}

static gboolean
get_bool (JsonObject *o, const char *name, gboolean def, gboolean *out, GError **error)
{
  if (member_is_null (o, name))
    {
      *out = def;
      return TRUE;
    }
  JsonNode *n = json_object_get_member (o, name);
  if (JSON_NODE_TYPE (n) != JSON_NODE_VALUE || json_node_get_value_type (n) != G_TYPE_BOOLEAN)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "config.json: field '%s' must be true or false", name);
      return FALSE;
    }
  *out = json_node_get_boolean (n);
  return TRUE;
}

/* Returns a borrowed string or @def; NULL with @error set on a wrong type. */
static const char *
get_string (JsonObject *o, const char *name, const char *def, GError **error)
{
  if (member_is_null (o, name))
    return def;
  JsonNode *n = json_object_get_member (o, name);
  if (JSON_NODE_TYPE (n) != JSON_NODE_VALUE || json_node_get_value_type (n) != G_TYPE_STRING)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "config.json: field '%s' must be a string", name);
      return NULL;
    }
  return json_node_get_string (n);
}

static gboolean
unsupported (GError **error, const char *field, const char *value)
{
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
               "config.json: %s '%s' is not supported", field, value);
  return FALSE;
}

/* Reads a list of block type names into @kinds; @resnet_resample[i] is 1
 * where the name implies resnet resampling (Resnet*Block2D), 0 where it
 * implies a conv resampler (DownBlock2D / UpBlock2D) and -1 where
 * downsample_type / upsample_type decides (Attn*Block2D). */
static gboolean
get_block_types (JsonObject *o, const char *name, gboolean down, int *n_out,
                 DdimBlockKind *kinds, int *resnet_resample, GError **error)
{
  static const char *down_default[] = { "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D" };
  static const char *up_default[] = { "AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D" };
  const char *plain = down ? "DownBlock2D" : "UpBlock2D";
  const char *attn = down ? "AttnDownBlock2D" : "AttnUpBlock2D";
  const char *resnet = down ? "ResnetDownsampleBlock2D" : "ResnetUpsampleBlock2D";

  if (member_is_null (o, name))
    {
      const char **def = down ? down_default : up_default;
      *n_out = 4;
      for (int i = 0; i < 4; i++)
        {
          kinds[i] = g_str_equal (def[i], plain) ? DDIM_BLOCK_PLAIN : DDIM_BLOCK_ATTENTION;
          resnet_resample[i] = kinds[i] == DDIM_BLOCK_PLAIN ? 0 : -1;
        }
      return TRUE;
    }
  JsonNode *n = json_object_get_member (o, name);
  if (!JSON_NODE_HOLDS_ARRAY (n))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "config.json: field '%s' must be a list of block type names", name);
      return FALSE;
    }
  JsonArray *a = json_node_get_array (n);
  guint len = json_array_get_length (a);
  if (len < 1 || len > DDIM_MAX_LEVELS)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "config.json: %s has %u entries; 1 to %d are supported", name, len,
                   DDIM_MAX_LEVELS);
      return FALSE;
    }
  for (guint i = 0; i < len; i++)
    {
      JsonNode *e = json_array_get_element (a, i);
      if (JSON_NODE_TYPE (e) != JSON_NODE_VALUE || json_node_get_value_type (e) != G_TYPE_STRING)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "config.json: entries of '%s' must be strings", name);
          return FALSE;
        }
      const char *s = json_node_get_string (e);
      if (g_str_equal (s, plain))
        kinds[i] = DDIM_BLOCK_PLAIN, resnet_resample[i] = 0;
      else if (g_str_equal (s, resnet))
        kinds[i] = DDIM_BLOCK_PLAIN, resnet_resample[i] = 1;
      else if (g_str_equal (s, attn))
        kinds[i] = DDIM_BLOCK_ATTENTION, resnet_resample[i] = -1;
      else
        return unsupported (error, "block type", s);
    }
  *n_out = (int) len;
  return TRUE;
}

/* downsample_type / upsample_type, reconciled with what the block names
 * imply for every block that resamples (all but the last). */
static gboolean
get_resample_type (JsonObject *o, const char *field, int *resnet_resample, int n_levels,
                   DdimResampleType *type, GError **error)
{
  const char *s = get_string (o, field, "conv", error);
  if (s == NULL)
    return FALSE;
  if (g_str_equal (s, "conv"))
    *type = DDIM_RESAMPLE_CONV;
  else if (g_str_equal (s, "resnet"))
    *type = DDIM_RESAMPLE_RESNET;
  else
    return unsupported (error, field, s);
  int named = -1;
  for (int i = 0; i < n_levels - 1; i++)
    {
      if (resnet_resample[i] < 0)
        resnet_resample[i] = *type == DDIM_RESAMPLE_RESNET;
      if (named >= 0 && resnet_resample[i] != named)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                       "config.json: blocks that mix resnet and conv resampling (%s '%s' and "
                       "the block types) are not supported", field, s);
          return FALSE;
        }
      named = resnet_resample[i];
    }
  if (named >= 0)
    *type = named ? DDIM_RESAMPLE_RESNET : DDIM_RESAMPLE_CONV;
  return TRUE;
}

void
ddim_unet_config_init (DdimUNetConfig *c)
{
  static const int boc[] = { 224, 448, 672, 896 };
  memset (c, 0, sizeof *c);
  c->sample_size = 0;
  c->in_channels = 3;
  c->out_channels = 3;
  c->flip_sin_to_cos = TRUE;
  c->freq_shift = 0;
  c->n_levels = 4;
  memcpy (c->block_out_channels, boc, sizeof boc);
  for (int i = 0; i < 4; i++)
    {
      c->down_blocks[i] = i == 0 ? DDIM_BLOCK_PLAIN : DDIM_BLOCK_ATTENTION;
      c->up_blocks[i] = i == 3 ? DDIM_BLOCK_PLAIN : DDIM_BLOCK_ATTENTION;
    }
  c->layers_per_block = 2;
  c->mid_block_scale_factor = 1;
  c->downsample_padding = 1;
  c->attention_head_dim = 8;
  c->norm_num_groups = 32;
  c->attn_norm_num_groups = 0;
  c->norm_eps = 1e-5;
  c->scale_shift = FALSE;
  c->add_attention = TRUE;
  c->downsample_type = DDIM_RESAMPLE_CONV;
  c->upsample_type = DDIM_RESAMPLE_CONV;
  c->resample_with_conv = TRUE;
}

static gboolean
invalid (GError **error, int code, const char *fmt, ...) G_GNUC_PRINTF (3, 4);

static gboolean
invalid (GError **error, int code, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (error, DDIM_ERROR, code, "config.json: %s", msg);
  return FALSE;
}

/* Attention heads of a block of @channels: 0 if they do not divide it. */
static int
heads_for (const DdimUNetConfig *c, int channels, gboolean up)
{
  int fixed = up && c->attention_heads_up > 0 ? c->attention_heads_up : c->attention_heads;
  if (fixed > 0)
    return channels % fixed == 0 ? fixed : 0;
  if (c->attention_head_dim > 0)
    return channels % c->attention_head_dim == 0 ? channels / c->attention_head_dim : 0;
  return 1;
}

gboolean
ddim_unet_config_validate (const DdimUNetConfig *c, GError **error)
{
  g_return_val_if_fail (c != NULL, FALSE);
  if (c->n_levels < 1 || c->n_levels > DDIM_MAX_LEVELS)
    return invalid (error, DDIM_ERROR_UNSUPPORTED, "%d levels are not supported (1 to %d)",
                    c->n_levels, DDIM_MAX_LEVELS);
  for (int i = 0; i < c->n_levels; i++)
    if (c->block_out_channels[i] <= 0 || c->block_out_channels[i] > 65536)
      return invalid (error, DDIM_ERROR_FORMAT,
                      "block_out_channels[%d] = %d is not a valid channel count", i,
                      c->block_out_channels[i]);
  if (c->in_channels < 1 || c->in_channels > 64 || c->out_channels < 1 || c->out_channels > 64)
    return invalid (error, DDIM_ERROR_UNSUPPORTED,
                    "in_channels %d / out_channels %d are not supported (1 to 64)",
                    c->in_channels, c->out_channels);
  if (c->layers_per_block < 1 || c->layers_per_block > 16)
    return invalid (error, DDIM_ERROR_UNSUPPORTED,
                    "layers_per_block %d is not supported (1 to 16)", c->layers_per_block);
  if (c->downsample_padding != 0 && c->downsample_padding != 1)
    return invalid (error, DDIM_ERROR_UNSUPPORTED,
                    "downsample_padding %d is not supported (0 or 1)", c->downsample_padding);
  if (!(c->norm_eps > 0 && c->norm_eps <= 1))
    return invalid (error, DDIM_ERROR_FORMAT, "norm_eps %g is not valid", c->norm_eps);
  if (!(c->mid_block_scale_factor > 0 && c->mid_block_scale_factor < 1e6))
    return invalid (error, DDIM_ERROR_FORMAT, "mid_block_scale_factor %g is not valid",
                    c->mid_block_scale_factor);
  if (!(fabs (c->freq_shift) < 1e6))
    return invalid (error, DDIM_ERROR_FORMAT, "freq_shift %g is not valid", c->freq_shift);
  if (c->attention_head_dim < 0 || c->attention_heads < 0 || c->attention_heads_up < 0)
    return invalid (error, DDIM_ERROR_UNSUPPORTED, "attention_head_dim %d / heads %d / %d "
                    "are not supported", c->attention_head_dim, c->attention_heads,
                    c->attention_heads_up);
  int groups[2] = { c->norm_num_groups, c->attn_norm_num_groups };
  for (int gi = 0; gi < 2; gi++)
    {
      if (gi == 1 && groups[gi] == 0)
        continue;
      const char *field = gi ? "attn_norm_num_groups" : "norm_num_groups";
      if (groups[gi] < 1)
        return invalid (error, DDIM_ERROR_UNSUPPORTED, "%s %d is not supported", field,
                        groups[gi]);
      for (int i = 0; i < c->n_levels; i++)
        if (c->block_out_channels[i] % groups[gi] != 0)
          return invalid (error, DDIM_ERROR_UNSUPPORTED,
                          "%s %d does not divide block_out_channels[%d] = %d", field,
                          groups[gi], i, c->block_out_channels[i]);
    }
  for (int i = 0; i < c->n_levels; i++)
    {
      int ch = c->block_out_channels[i];
      gboolean down_attn = c->down_blocks[i] == DDIM_BLOCK_ATTENTION
                           || (i == c->n_levels - 1 && c->add_attention);
      gboolean up_attn = c->up_blocks[c->n_levels - 1 - i] == DDIM_BLOCK_ATTENTION;
      if ((down_attn && heads_for (c, ch, FALSE) == 0) || (up_attn && heads_for (c, ch, TRUE) == 0))
        {
          if (c->attention_heads == 0 && c->attention_heads_up == 0)
            return invalid (error, DDIM_ERROR_UNSUPPORTED,
                            "attention_head_dim %d does not divide block_out_channels[%d] = %d",
                            c->attention_head_dim, i, ch);
          return invalid (error, DDIM_ERROR_UNSUPPORTED,
                          "the attention heads (%d, upsampling %d) do not divide "
                          "block_out_channels[%d] = %d", c->attention_heads,
                          c->attention_heads_up, i, ch);
        }
    }
  if (c->sample_size < 0 || c->sample_size > 16384)
    return invalid (error, DDIM_ERROR_FORMAT, "sample_size %d is not valid", c->sample_size);
  return TRUE;
}

static gboolean
parse_object (JsonObject *o, DdimUNetConfig *c, GError **error)
{
  ddim_unet_config_init (c);

  const char *cls = get_string (o, "_class_name", "UNet2DModel", error);
  if (cls == NULL)
    return FALSE;
  if (!g_str_equal (cls, "UNet2DModel"))
    return unsupported (error, "_class_name", cls);

  /* sample_size: an int or [height, width] with equal sides. */
  JsonNode *ss = json_object_get_member (o, "sample_size");
  if (ss != NULL && JSON_NODE_HOLDS_ARRAY (ss))
    {
      JsonArray *a = json_node_get_array (ss);
      if (json_array_get_length (a) != 2
          || json_array_get_int_element (a, 0) != json_array_get_int_element (a, 1))
        return unsupported (error, "sample_size", "non-square list");
      c->sample_size = (int) json_array_get_int_element (a, 0);
    }
  else if (!get_int (o, "sample_size", 0, &c->sample_size, error))
    return FALSE;

  if (!get_int (o, "in_channels", 3, &c->in_channels, error)
      || !get_int (o, "out_channels", 3, &c->out_channels, error)
      || !get_bool (o, "center_input_sample", FALSE, &c->center_input_sample, error)
      || !get_bool (o, "flip_sin_to_cos", TRUE, &c->flip_sin_to_cos, error)
      || !get_double (o, "freq_shift", 0, &c->freq_shift, error)
      || !get_int (o, "layers_per_block", 2, &c->layers_per_block, error)
      || !get_double (o, "mid_block_scale_factor", 1, &c->mid_block_scale_factor, error)
      || !get_int (o, "downsample_padding", 1, &c->downsample_padding, error)
      || !get_int (o, "attention_head_dim", 8, &c->attention_head_dim, error)
      || !get_int (o, "norm_num_groups", 32, &c->norm_num_groups, error)
      || !get_int (o, "attn_norm_num_groups", 0, &c->attn_norm_num_groups, error)
      || !get_double (o, "norm_eps", 1e-5, &c->norm_eps, error)
      || !get_bool (o, "add_attention", TRUE, &c->add_attention, error)
      || !get_bool (o, "ddim_resample_with_conv", TRUE, &c->resample_with_conv, error)
      || !get_bool (o, "ddim_learned_sigma", FALSE, &c->learned_sigma, error)
      || !get_int (o, "ddim_attention_heads", 0, &c->attention_heads, error)
      || !get_int (o, "ddim_attention_heads_upsample", 0, &c->attention_heads_up, error))
    return FALSE;
  /* attention_head_dim null means one head spanning the block's channels. */
  if (json_object_has_member (o, "attention_head_dim") && member_is_null (o, "attention_head_dim"))
    c->attention_head_dim = 0;
  if (c->learned_sigma)
    {
      if (c->out_channels % 2 != 0)
        return invalid (error, DDIM_ERROR_FORMAT,
                        "out_channels %d with ddim_learned_sigma must be even (eps, then "
                        "the variance)", c->out_channels);
      c->out_channels /= 2;
    }

  const char *s;
  if ((s = get_string (o, "time_embedding_type", "positional", error)) == NULL)
    return FALSE;
  if (!g_str_equal (s, "positional"))
    return unsupported (error, "time_embedding_type", s);
  if ((s = get_string (o, "act_fn", "silu", error)) == NULL)
    return FALSE;
  if (!g_str_equal (s, "silu") && !g_str_equal (s, "swish"))
    return unsupported (error, "act_fn", s);
  if ((s = get_string (o, "resnet_time_scale_shift", "default", error)) == NULL)
    return FALSE;
  if (g_str_equal (s, "scale_shift"))
    c->scale_shift = TRUE;
  else if (!g_str_equal (s, "default"))
    return unsupported (error, "resnet_time_scale_shift", s);
  if (!member_is_null (o, "class_embed_type"))
    return unsupported (error, "class_embed_type", "(class-conditional models)");
  if (!member_is_null (o, "num_class_embeds"))
    return unsupported (error, "num_class_embeds", "(class-conditional models)");

  int n_down = 0, n_up = 0;
  int down_resnet[DDIM_MAX_LEVELS], up_resnet[DDIM_MAX_LEVELS];
  if (!get_block_types (o, "down_block_types", TRUE, &n_down, c->down_blocks, down_resnet, error)
      || !get_block_types (o, "up_block_types", FALSE, &n_up, c->up_blocks, up_resnet, error))
    return FALSE;

  JsonNode *bo = json_object_get_member (o, "block_out_channels");
  if (bo != NULL && !JSON_NODE_HOLDS_NULL (bo))
    {
      if (!JSON_NODE_HOLDS_ARRAY (bo))
        return invalid (error, DDIM_ERROR_FORMAT,
                        "field 'block_out_channels' must be a list of integers");
      JsonArray *a = json_node_get_array (bo);
      guint len = json_array_get_length (a);
      if (len < 1 || len > DDIM_MAX_LEVELS)
        return invalid (error, DDIM_ERROR_UNSUPPORTED,
                        "block_out_channels has %u entries; 1 to %d are supported", len,
                        DDIM_MAX_LEVELS);
      c->n_levels = (int) len;
      for (guint i = 0; i < len; i++)
        {
          gint64 v = json_array_get_int_element (a, i);
          if (v <= 0 || v > 65536)
            return invalid (error, DDIM_ERROR_FORMAT,
                            "block_out_channels[%u] = %" G_GINT64_FORMAT
                            " is not a valid channel count", i, v);
          c->block_out_channels[i] = (int) v;
        }
    }
  if (n_down != c->n_levels || n_up != c->n_levels)
    return invalid (error, DDIM_ERROR_FORMAT,
                    "down_block_types (%d), up_block_types (%d) and block_out_channels (%d) "
                    "must have the same length", n_down, n_up, c->n_levels);
  /* The up blocks resample at all but the last; their flags are in up order. */
  if (!get_resample_type (o, "downsample_type", down_resnet, c->n_levels, &c->downsample_type,
                          error)
      || !get_resample_type (o, "upsample_type", up_resnet, c->n_levels, &c->upsample_type,
                             error))
    return FALSE;
  return ddim_unet_config_validate (c, error);
}

gboolean
ddim_unet_config_parse (const char *json, gssize length, DdimUNetConfig *config, GError **error)
{
  g_return_val_if_fail (json != NULL && config != NULL, FALSE);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) local = NULL;
  if (!json_parser_load_from_data (parser, json, length, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "config.json is not valid JSON: %s", local->message);
      return FALSE;
    }
  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "config.json: the top level must be a JSON object");
      return FALSE;
    }
  return parse_object (json_node_get_object (root), config, error);
}

gboolean
ddim_unet_config_load (const char *path, DdimUNetConfig *config, GError **error)
{
  g_autofree char *contents = NULL;
  gsize len = 0;
  g_autoptr (GError) local = NULL;
  if (!g_file_get_contents (path, &contents, &len, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read %s: %s", path, local->message);
      return FALSE;
    }
  return ddim_unet_config_parse (contents, (gssize) len, config, error);
}

int
ddim_unet_config_temb_dim (const DdimUNetConfig *config)
{
  return 4 * config->block_out_channels[0];
}

int
ddim_unet_config_size_factor (const DdimUNetConfig *config)
{
  return 1 << (config->n_levels - 1);
}

char *
ddim_unet_config_to_json (const DdimUNetConfig *c)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
#define KEY(k) json_builder_set_member_name (b, k)
  KEY ("_class_name"); json_builder_add_string_value (b, "UNet2DModel");
  KEY ("_diffusers_version"); json_builder_add_string_value (b, "0.20.0");
  KEY ("act_fn"); json_builder_add_string_value (b, "silu");
  KEY ("add_attention"); json_builder_add_boolean_value (b, c->add_attention);
  KEY ("attention_head_dim");
  if (c->attention_head_dim > 0)
    json_builder_add_int_value (b, c->attention_head_dim);
  else
    json_builder_add_null_value (b);
  KEY ("attn_norm_num_groups");
  if (c->attn_norm_num_groups > 0)
    json_builder_add_int_value (b, c->attn_norm_num_groups);
  else
    json_builder_add_null_value (b);
  KEY ("block_out_channels");
  json_builder_begin_array (b);
  for (int i = 0; i < c->n_levels; i++)
    json_builder_add_int_value (b, c->block_out_channels[i]);
  json_builder_end_array (b);
  KEY ("center_input_sample"); json_builder_add_boolean_value (b, c->center_input_sample);
  KEY ("class_embed_type"); json_builder_add_null_value (b);
  /* Extra keys for what diffusers' UNet2DModel cannot express; written
   * only when they differ from diffusers' behaviour. */
  if (c->attention_heads > 0)
    {
      KEY ("ddim_attention_heads"); json_builder_add_int_value (b, c->attention_heads);
    }
  if (c->attention_heads_up > 0)
    {
      KEY ("ddim_attention_heads_upsample"); json_builder_add_int_value (b, c->attention_heads_up);
    }
  if (c->learned_sigma)
    {
      KEY ("ddim_learned_sigma"); json_builder_add_boolean_value (b, TRUE);
    }
  if (!c->resample_with_conv)
    {
      KEY ("ddim_resample_with_conv"); json_builder_add_boolean_value (b, FALSE);
    }
  gboolean down_resnet = c->downsample_type == DDIM_RESAMPLE_RESNET;
  gboolean up_resnet = c->upsample_type == DDIM_RESAMPLE_RESNET;
  KEY ("down_block_types");
  json_builder_begin_array (b);
  for (int i = 0; i < c->n_levels; i++)
    json_builder_add_string_value (b, c->down_blocks[i] == DDIM_BLOCK_ATTENTION ? "AttnDownBlock2D"
                                      : down_resnet ? "ResnetDownsampleBlock2D" : "DownBlock2D");
  json_builder_end_array (b);
  KEY ("downsample_padding"); json_builder_add_int_value (b, c->downsample_padding);
  KEY ("downsample_type"); json_builder_add_string_value (b, down_resnet ? "resnet" : "conv");
  KEY ("dropout"); json_builder_add_double_value (b, 0.0);
  KEY ("flip_sin_to_cos"); json_builder_add_boolean_value (b, c->flip_sin_to_cos);
  KEY ("freq_shift"); json_builder_add_int_value (b, (gint64) c->freq_shift);
  KEY ("in_channels"); json_builder_add_int_value (b, c->in_channels);
  KEY ("layers_per_block"); json_builder_add_int_value (b, c->layers_per_block);
  KEY ("mid_block_scale_factor"); json_builder_add_double_value (b, c->mid_block_scale_factor);
  KEY ("norm_eps"); json_builder_add_double_value (b, c->norm_eps);
  KEY ("norm_num_groups"); json_builder_add_int_value (b, c->norm_num_groups);
  KEY ("num_class_embeds"); json_builder_add_null_value (b);
  KEY ("out_channels");
  json_builder_add_int_value (b, c->learned_sigma ? 2 * c->out_channels : c->out_channels);
  KEY ("resnet_time_scale_shift");
  json_builder_add_string_value (b, c->scale_shift ? "scale_shift" : "default");
  KEY ("sample_size"); json_builder_add_int_value (b, c->sample_size);
  KEY ("time_embedding_type"); json_builder_add_string_value (b, "positional");
  KEY ("up_block_types");
  json_builder_begin_array (b);
  for (int i = 0; i < c->n_levels; i++)
    json_builder_add_string_value (b, c->up_blocks[i] == DDIM_BLOCK_ATTENTION ? "AttnUpBlock2D"
                                      : up_resnet ? "ResnetUpsampleBlock2D" : "UpBlock2D");
  json_builder_end_array (b);
  KEY ("upsample_type"); json_builder_add_string_value (b, up_resnet ? "resnet" : "conv");
#undef KEY
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  return ddim_json_to_string (root, 2);
}
