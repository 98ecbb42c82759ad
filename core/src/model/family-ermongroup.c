/* ermongroup/ddim (also pesser/pytorch_diffusion, SDEdit) models: config.yml
 * to a UNet2DModel config and schedule, and the checkpoint's key names.
 *
 * That project's Model is a UNet2DModel with: the sinusoidal embedding sin
 * first with exp(-k ln(10000) / (h - 1)) (flip_sin_to_cos false, freq_shift
 * 1), GroupNorm eps 1e-6, one attention head as wide as the block,
 * downsampling by a conv after padding right and bottom (downsample_padding
 * 0), attention at level i iff image_size / 2^i is in attn_resolutions
 * (down and up alike, always in the middle). docs/torch-checkpoints-notes.md
 * section 3. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "ddim/error.h"
#include "model/family-private.h"

static gboolean
yaml_error (GError **error, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

static gboolean
yaml_error (GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "config.yml: %s", msg);
  return FALSE;
}

/* The value under @key in mapping @map, or NULL. */
static yaml_node_t *
map_get (yaml_document_t *doc, yaml_node_t *map, const char *key)
{
  if (map == NULL || map->type != YAML_MAPPING_NODE)
    return NULL;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++)
    {
      yaml_node_t *k = yaml_document_get_node (doc, p->key);
      if (k && k->type == YAML_SCALAR_NODE && strcmp ((const char *) k->data.scalar.value, key) == 0)
        return yaml_document_get_node (doc, p->value);
    }
  return NULL;
}

typedef struct {
  yaml_document_t *doc;
  yaml_node_t     *section;
  const char      *name;       /* "model", "data", "diffusion" */
} Section;

static yaml_node_t *
required (Section *s, const char *key, GError **error)
{
  yaml_node_t *n = map_get (s->doc, s->section, key);
  if (n == NULL)
    yaml_error (error, "%s.%s is missing", s->name, key);
  return n;
}

static gboolean
scalar_double (Section *s, const char *key, yaml_node_t *n, double *out, GError **error)
{
  const char *v = n && n->type == YAML_SCALAR_NODE ? (const char *) n->data.scalar.value : NULL;
  char *end = NULL;
  errno = 0;
  double d = v && *v ? g_ascii_strtod (v, &end) : 0;
  if (v == NULL || *v == '\0' || *end != '\0' || errno != 0 || !isfinite (d))
    return yaml_error (error, "%s.%s must be a number, not '%s'", s->name, key,
                       v ? v : "(a list or mapping)");
  *out = d;
  return TRUE;
}

static gboolean
get_double (Section *s, const char *key, double *out, GError **error)
{
  yaml_node_t *n = required (s, key, error);
  return n && scalar_double (s, key, n, out, error);
}

static gboolean
scalar_int (Section *s, const char *key, yaml_node_t *n, int lo, int hi, int *out,
            GError **error)
{
  const char *v = n && n->type == YAML_SCALAR_NODE ? (const char *) n->data.scalar.value : NULL;
  gint64 i = 0;
  if (v == NULL || !g_ascii_string_to_signed (v, 10, lo, hi, &i, NULL))
    return yaml_error (error, "%s.%s must be an integer from %d to %d, not '%s'", s->name, key,
                       lo, hi, v ? v : "(a list or mapping)");
  *out = (int) i;
  return TRUE;
}

static gboolean
get_int (Section *s, const char *key, int lo, int hi, int *out, GError **error)
{
  yaml_node_t *n = required (s, key, error);
  return n && scalar_int (s, key, n, lo, hi, out, error);
}

/* YAML 1.1 booleans as PyYAML reads them. */
static gboolean
get_bool (Section *s, const char *key, gboolean *out, GError **error)
{
  static const char *yes[] = { "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON" };
  static const char *no[] = { "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF" };
  yaml_node_t *n = required (s, key, error);
  if (n == NULL)
    return FALSE;
  const char *v = n->type == YAML_SCALAR_NODE ? (const char *) n->data.scalar.value : "";
  for (guint i = 0; i < G_N_ELEMENTS (yes); i++)
    {
      if (strcmp (v, yes[i]) == 0)
        return *out = TRUE, TRUE;
      if (strcmp (v, no[i]) == 0)
        return *out = FALSE, TRUE;
    }
  return yaml_error (error, "%s.%s must be true or false, not '%s'", s->name, key, v);
}

/* A list of integers (ch_mult, attn_resolutions). */
static gboolean
get_int_list (Section *s, const char *key, int max_len, int lo, int hi, int *out, int *len,
              GError **error)
{
  yaml_node_t *n = required (s, key, error);
  if (n == NULL)
    return FALSE;
  if (n->type != YAML_SEQUENCE_NODE)
    return yaml_error (error, "%s.%s must be a list of integers", s->name, key);
  int k = 0;
  for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++)
    {
      if (k >= max_len)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                       "config.yml: %s.%s has more than %d entries", s->name, key, max_len);
          return FALSE;
        }
      yaml_node_t *e = yaml_document_get_node (s->doc, *it);
      if (!scalar_int (s, key, e, lo, hi, &out[k++], error))
        return FALSE;
    }
  *len = k;
  return TRUE;
}

static const char *
get_string (Section *s, const char *key, GError **error)
{
  yaml_node_t *n = required (s, key, error);
  if (n == NULL)
    return NULL;
  if (n->type != YAML_SCALAR_NODE)
    {
      yaml_error (error, "%s.%s must be a string", s->name, key);
      return NULL;
    }
  return (const char *) n->data.scalar.value;
}

static gboolean
unsupported (GError **error, const char *field, const char *value, const char *why)
{
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
               "config.yml: %s '%s' is not supported%s", field, value, why);
  return FALSE;
}

static gboolean
parse_document (yaml_document_t *doc, DdimUNetConfig *c, DdimSchedule **schedule_out,
                gboolean *use_ema, GError **error)
{
  yaml_node_t *root = yaml_document_get_root_node (doc);
  if (root == NULL || root->type != YAML_MAPPING_NODE)
    return yaml_error (error, "the top level must be a mapping with data, model and diffusion");
  Section data = { doc, map_get (doc, root, "data"), "data" };
  Section model = { doc, map_get (doc, root, "model"), "model" };
  Section diff = { doc, map_get (doc, root, "diffusion"), "diffusion" };
  Section *secs[] = { &data, &model, &diff };
  for (guint i = 0; i < G_N_ELEMENTS (secs); i++)
    if (secs[i]->section == NULL || secs[i]->section->type != YAML_MAPPING_NODE)
      return yaml_error (error, "section '%s' is missing or not a mapping", secs[i]->name);

  int image_size, ch, out_ch, in_ch, nrb, T;
  int ch_mult[DDIM_MAX_LEVELS + 1], n_mult = 0, attn[64], n_attn = 0;
  gboolean resamp_with_conv, ema = FALSE;
  double beta_start, beta_end;
  if (!get_int (&data, "image_size", 1, 16384, &image_size, error)
      || !get_int (&model, "ch", 1, 65536, &ch, error)
      || !get_int (&model, "out_ch", 1, 64, &out_ch, error)
      || !get_int (&model, "in_channels", 1, 64, &in_ch, error)
      || !get_int (&model, "num_res_blocks", 1, 16, &nrb, error)
      || !get_int_list (&model, "ch_mult", DDIM_MAX_LEVELS + 1, 1, 1024, ch_mult, &n_mult, error)
      || !get_int_list (&model, "attn_resolutions", G_N_ELEMENTS (attn), 0, 1 << 20, attn,
                        &n_attn, error)
      || !get_bool (&model, "resamp_with_conv", &resamp_with_conv, error)
      || !get_int (&diff, "num_diffusion_timesteps", 1, 100000, &T, error)
      || !get_double (&diff, "beta_start", &beta_start, error)
      || !get_double (&diff, "beta_end", &beta_end, error))
    return FALSE;
  /* model.ema: ermongroup's sampler reads it; absent means no EMA. */
  if (map_get (doc, model.section, "ema") && !get_bool (&model, "ema", &ema, error))
    return FALSE;
  yaml_node_t *type_node = map_get (doc, model.section, "type");
  if (type_node)
    {
      const char *type = get_string (&model, "type", error);
      if (type == NULL)
        return FALSE;
      /* "bayesian" only adds a logvar parameter the forward never uses. */
      if (!g_str_equal (type, "simple") && !g_str_equal (type, "bayesian"))
        return unsupported (error, "model.type", type, " (simple or bayesian)");
    }
  if (n_mult < 1 || n_mult > DDIM_MAX_LEVELS)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "config.yml: model.ch_mult has %d entries; 1 to %d are supported", n_mult,
                   DDIM_MAX_LEVELS);
      return FALSE;
    }
  if (ch_mult[0] != 1)
    {
      /* conv_in and the time embedding are ch wide, the first level
       * ch * ch_mult[0]; UNet2DModel ties them. */
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "config.yml: model.ch_mult must start with 1, not %d", ch_mult[0]);
      return FALSE;
    }
  const char *sched = get_string (&diff, "beta_schedule", error);
  if (sched == NULL)
    return FALSE;
  DdimBetaSchedule beta;
  if (g_str_equal (sched, "linear"))
    beta = DDIM_BETA_LINEAR;
  else if (g_str_equal (sched, "quad"))
    beta = DDIM_BETA_SCALED_LINEAR;
  else
    return unsupported (error, "diffusion.beta_schedule", sched, " (linear or quad)");
  if (!(beta_start > 0 && beta_end > 0 && beta_start < 1 && beta_end < 1) || T < 2)
    return yaml_error (error, "diffusion: beta_start %g, beta_end %g, num_diffusion_timesteps "
                       "%d are not valid", beta_start, beta_end, T);

  ddim_unet_config_init (c);
  c->sample_size = image_size;
  c->in_channels = in_ch;
  c->out_channels = out_ch;
  c->flip_sin_to_cos = FALSE;
  c->freq_shift = 1;
  c->n_levels = n_mult;
  c->layers_per_block = nrb;
  c->downsample_padding = 0;
  c->attention_head_dim = 0;
  c->norm_eps = 1e-6;
  c->resample_with_conv = resamp_with_conv;
  for (int i = 0; i < n_mult; i++)
    {
      if ((gint64) ch * ch_mult[i] > 65536)
        return yaml_error (error, "model.ch %d x ch_mult[%d] %d is too large", ch, i, ch_mult[i]);
      c->block_out_channels[i] = ch * ch_mult[i];
      gboolean has_attn = FALSE;
      int res = image_size >> i;
      for (int k = 0; k < n_attn; k++)
        has_attn |= attn[k] == res;
      c->down_blocks[i] = has_attn ? DDIM_BLOCK_ATTENTION : DDIM_BLOCK_PLAIN;
      c->up_blocks[n_mult - 1 - i] = c->down_blocks[i];
    }
  if (!ddim_unet_config_validate (c, error))
    {
      /* The checks speak of config.json; say where the values came from. */
      g_prefix_error (error, "config.yml (as a UNet2DModel): ");
      return FALSE;
    }
  if (schedule_out)
    {
      DdimSchedule *s = ddim_schedule_new_betas (beta, beta_start, beta_end, T,
                                                 DDIM_ALPHAS_FLOAT64_BETAS);
      s->clip_sample = FALSE;   /* generalized_steps never clips */
      *schedule_out = s;
    }
  if (use_ema)
    *use_ema = ema;
  return TRUE;
}

gboolean
ddim_ermongroup_config_parse (const char *text, gsize length, DdimUNetConfig *config,
                              DdimSchedule **schedule, gboolean *use_ema, GError **error)
{
  g_return_val_if_fail (text != NULL || length == 0, FALSE);
  g_return_val_if_fail (config != NULL, FALSE);
  if (schedule)
    *schedule = NULL;
  yaml_parser_t parser;
  if (!yaml_parser_initialize (&parser))
    return yaml_error (error, "cannot initialise the YAML parser");
  yaml_parser_set_input_string (&parser, (const unsigned char *) (text ? text : ""), length);
  yaml_document_t doc;
  gboolean ok;
  if (!yaml_parser_load (&parser, &doc))
    {
      ok = yaml_error (error, "not valid YAML: %s at line %zu, column %zu",
                       parser.problem ? parser.problem : "syntax error",
                       parser.problem_mark.line + 1, parser.problem_mark.column + 1);
      yaml_parser_delete (&parser);
      return ok;
    }
  ok = parse_document (&doc, config, schedule, use_ema, error);
  yaml_document_delete (&doc);
  yaml_parser_delete (&parser);
  return ok;
}

/* ---- key names ----------------------------------------------------------
 * UNet2DModel name -> ermongroup name (section 3.4 of the notes). */

static const char *
resnet_part (const char *p)
{
  if (g_str_has_prefix (p, "time_emb_proj."))
    return "temb_proj.";
  if (g_str_has_prefix (p, "conv_shortcut."))
    return "nin_shortcut.";
  return NULL;
}

static char *
map_resnet (const char *prefix, const char *rest)
{
  const char *repl = resnet_part (rest);
  if (repl)
    return g_strconcat (prefix, repl, strchr (rest, '.') + 1, NULL);
  return g_strconcat (prefix, rest, NULL);
}

static char *
map_attention (const char *prefix, const char *rest)
{
  static const char *map[][2] = {
    { "group_norm.", "norm." }, { "to_q.", "q." }, { "to_k.", "k." }, { "to_v.", "v." },
    { "to_out.0.", "proj_out." },
  };
  for (guint i = 0; i < G_N_ELEMENTS (map); i++)
    if (g_str_has_prefix (rest, map[i][0]))
      return g_strconcat (prefix, map[i][1], rest + strlen (map[i][0]), NULL);
  return NULL;
}

char *
ddim_ermongroup_key (const DdimUNetConfig *c, const char *name)
{
  int L = c->n_levels, i, j, off = 0;
  if (g_str_has_prefix (name, "time_embedding.linear_1."))
    return g_strconcat ("temb.dense.0.", name + strlen ("time_embedding.linear_1."), NULL);
  if (g_str_has_prefix (name, "time_embedding.linear_2."))
    return g_strconcat ("temb.dense.1.", name + strlen ("time_embedding.linear_2."), NULL);
  if (g_str_has_prefix (name, "conv_norm_out."))
    return g_strconcat ("norm_out.", name + strlen ("conv_norm_out."), NULL);
  if (g_str_has_prefix (name, "conv_in.") || g_str_has_prefix (name, "conv_out."))
    return g_strdup (name);
  if (sscanf (name, "down_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 && off > 0)
    {
      g_autofree char *p = g_strdup_printf ("down.%d.block.%d.", i, j);
      return map_resnet (p, name + off);
    }
  off = 0;
  if (sscanf (name, "down_blocks.%d.attentions.%d.%n", &i, &j, &off) == 2 && off > 0)
    {
      g_autofree char *p = g_strdup_printf ("down.%d.attn.%d.", i, j);
      return map_attention (p, name + off);
    }
  off = 0;
  if (sscanf (name, "down_blocks.%d.downsamplers.0.conv.%n", &i, &off) == 1 && off > 0)
    return g_strdup_printf ("down.%d.downsample.conv.%s", i, name + off);
  off = 0;
  if (sscanf (name, "up_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 && off > 0)
    {
      g_autofree char *p = g_strdup_printf ("up.%d.block.%d.", L - 1 - i, j);
      return map_resnet (p, name + off);
    }
  off = 0;
  if (sscanf (name, "up_blocks.%d.attentions.%d.%n", &i, &j, &off) == 2 && off > 0)
    {
      g_autofree char *p = g_strdup_printf ("up.%d.attn.%d.", L - 1 - i, j);
      return map_attention (p, name + off);
    }
  off = 0;
  if (sscanf (name, "up_blocks.%d.upsamplers.0.conv.%n", &i, &off) == 1 && off > 0)
    return g_strdup_printf ("up.%d.upsample.conv.%s", L - 1 - i, name + off);
  if (g_str_has_prefix (name, "mid_block.resnets.0."))
    return map_resnet ("mid.block_1.", name + strlen ("mid_block.resnets.0."));
  if (g_str_has_prefix (name, "mid_block.resnets.1."))
    return map_resnet ("mid.block_2.", name + strlen ("mid_block.resnets.1."));
  if (g_str_has_prefix (name, "mid_block.attentions.0."))
    return map_attention ("mid.attn_1.", name + strlen ("mid_block.attentions.0."));
  return NULL;
}
