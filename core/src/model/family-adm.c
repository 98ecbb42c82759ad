/* openai/guided-diffusion (ADM) models: model_flags.txt (the command-line
 * flags of that project's scripts) to a UNet2DModel config and schedule,
 * and the checkpoint's key names. docs/torch-checkpoints-notes.md section 4.
 *
 * Unset flags take model_and_diffusion_defaults(). The UNetModel maps onto
 * UNet2DModel: timestep embedding cos first over h (flip_sin_to_cos,
 * freq_shift 0), GroupNorm eps 1e-5 everywhere (the mid attention too),
 * symmetric-pad conv downsampling, resblock_updown as resnet resamplers,
 * fused qkv split at load. Flags that only matter to training or to
 * guided-diffusion's own sampler (dropout, use_checkpoint, use_kl,
 * rescale_learned_sigmas, timestep_respacing) are read and checked but
 * change nothing; use_fp16 runs the torch model's torso in float16, here
 * everything is float32 (the saved weights are the float32 masters). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ddim/error.h"
#include "model/family-private.h"

typedef struct {
  int      image_size, num_channels, num_res_blocks, num_heads, num_heads_upsample;
  int      num_head_channels, diffusion_steps;
  char    *attention_resolutions, *channel_mult, *noise_schedule, *timestep_respacing;
  double   dropout;
  gboolean class_cond, use_checkpoint, use_scale_shift_norm, resblock_updown, use_fp16;
  gboolean use_new_attention_order, learn_sigma, use_kl, predict_xstart, rescale_timesteps;
  gboolean rescale_learned_sigmas;
} Flags;

typedef enum { F_INT, F_FLOAT, F_BOOL, F_STRING } FlagType;

typedef struct {
  const char *name;
  FlagType    type;
  gsize       offset;
} FlagSpec;

#define F(n, t) { #n, t, G_STRUCT_OFFSET (Flags, n) }
static const FlagSpec specs[] = {
  F (image_size, F_INT), F (num_channels, F_INT), F (num_res_blocks, F_INT),
  F (num_heads, F_INT), F (num_heads_upsample, F_INT), F (num_head_channels, F_INT),
  F (attention_resolutions, F_STRING), F (channel_mult, F_STRING), F (dropout, F_FLOAT),
  F (class_cond, F_BOOL), F (use_checkpoint, F_BOOL), F (use_scale_shift_norm, F_BOOL),
  F (resblock_updown, F_BOOL), F (use_fp16, F_BOOL), F (use_new_attention_order, F_BOOL),
  F (learn_sigma, F_BOOL), F (diffusion_steps, F_INT), F (noise_schedule, F_STRING),
  F (timestep_respacing, F_STRING), F (use_kl, F_BOOL), F (predict_xstart, F_BOOL),
  F (rescale_timesteps, F_BOOL), F (rescale_learned_sigmas, F_BOOL),
};
#undef F

static void
flags_defaults (Flags *f)
{
  *f = (Flags) {
    .image_size = 64, .num_channels = 128, .num_res_blocks = 2, .num_heads = 4,
    .num_heads_upsample = -1, .num_head_channels = -1, .diffusion_steps = 1000,
    .attention_resolutions = g_strdup ("16,8"), .channel_mult = g_strdup (""),
    .noise_schedule = g_strdup ("linear"), .timestep_respacing = g_strdup (""),
    .use_scale_shift_norm = TRUE,
  };
}

static void
flags_clear (Flags *f)
{
  g_free (f->attention_resolutions);
  g_free (f->channel_mult);
  g_free (f->noise_schedule);
  g_free (f->timestep_respacing);
}

static gboolean
flag_error (GError **error, int code, const char *fmt, ...) G_GNUC_PRINTF (3, 4);

static gboolean
flag_error (GError **error, int code, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (error, DDIM_ERROR, code, "model_flags.txt: %s", msg);
  return FALSE;
}

/* One flag's value, read as guided-diffusion's argparse does (str2bool for
 * booleans). */
static gboolean
set_flag (Flags *f, const char *name, const char *value, GError **error)
{
  const FlagSpec *spec = NULL;
  for (guint i = 0; i < G_N_ELEMENTS (specs); i++)
    if (g_str_equal (specs[i].name, name))
      spec = &specs[i];
  if (spec == NULL)
    return flag_error (error, DDIM_ERROR_FORMAT,
                       "unknown flag --%s (the flags are those of guided-diffusion's "
                       "model_and_diffusion_defaults)", name);
  gpointer field = G_STRUCT_MEMBER_P (f, spec->offset);
  switch (spec->type)
    {
    case F_INT:
      {
        gint64 v;
        if (!g_ascii_string_to_signed (value, 10, -1, 1 << 20, &v, NULL))
          return flag_error (error, DDIM_ERROR_FORMAT, "--%s needs an integer, not '%s'", name,
                             value);
        *(int *) field = (int) v;
        return TRUE;
      }
    case F_FLOAT:
      {
        char *end = NULL;
        double v = g_ascii_strtod (value, &end);
        if (*value == '\0' || *end != '\0' || !isfinite (v))
          return flag_error (error, DDIM_ERROR_FORMAT, "--%s needs a number, not '%s'", name,
                             value);
        *(double *) field = v;
        return TRUE;
      }
    case F_BOOL:
      {
        static const char *yes[] = { "yes", "true", "t", "y", "1" };
        static const char *no[] = { "no", "false", "f", "n", "0" };
        g_autofree char *low = g_ascii_strdown (value, -1);
        for (guint i = 0; i < G_N_ELEMENTS (yes); i++)
          {
            if (g_str_equal (low, yes[i]))
              return *(gboolean *) field = TRUE, TRUE;
            if (g_str_equal (low, no[i]))
              return *(gboolean *) field = FALSE, TRUE;
          }
        return flag_error (error, DDIM_ERROR_FORMAT, "--%s needs True or False, not '%s'", name,
                           value);
      }
    case F_STRING:
    default:
      g_free (*(char **) field);
      *(char **) field = g_strdup (value);
      return TRUE;
    }
}

/* Splits the text into "--name value" / "--name=value" pairs. A line may be
 * a shell assignment as the project's README writes it (MODEL_FLAGS="...");
 * '#' starts a comment. */
static gboolean
read_flags (const char *text, gsize length, Flags *f, GError **error)
{
  if (memchr (text, '\0', length) != NULL)
    return flag_error (error, DDIM_ERROR_FORMAT, "the file contains a NUL byte");
  g_autofree char *copy = g_strndup (text, length);
  g_auto (GStrv) lines = g_strsplit (copy, "\n", -1);
  for (int li = 0; lines[li]; li++)
    {
      char *line = lines[li];
      char *hash = strchr (line, '#');
      if (hash)
        *hash = '\0';
      g_strstrip (line);
      /* NAME="..." or NAME='...' */
      const char *eq = strchr (line, '=');
      if (eq && line[0] != '-' && (eq[1] == '"' || eq[1] == '\''))
        {
          char quote = eq[1];
          gsize len = strlen (line);
          if (len < (gsize) (eq - line) + 3 || line[len - 1] != quote)
            return flag_error (error, DDIM_ERROR_FORMAT, "line %d: unbalanced quotes", li + 1);
          line[len - 1] = '\0';
          line = (char *) eq + 2;
        }
      g_auto (GStrv) tok = g_strsplit_set (line, " \t\r", -1);
      for (int i = 0; tok[i]; i++)
        {
          if (*tok[i] == '\0')
            continue;
          if (!g_str_has_prefix (tok[i], "--") || tok[i][2] == '\0')
            return flag_error (error, DDIM_ERROR_FORMAT,
                               "line %d: expected a flag such as --image_size, found '%s'",
                               li + 1, tok[i]);
          char *name = tok[i] + 2;
          char *value = strchr (name, '=');
          if (value)
            *value++ = '\0';
          else
            {
              int j = i + 1;
              while (tok[j] && *tok[j] == '\0')
                j++;
              if (tok[j] == NULL || g_str_has_prefix (tok[j], "--"))
                return flag_error (error, DDIM_ERROR_FORMAT, "line %d: --%s has no value",
                                   li + 1, name);
              value = tok[j];
              i = j;
            }
          if (!set_flag (f, name, value, error))
            return FALSE;
        }
    }
  return TRUE;
}

/* "1,2,4" -> ints in [lo, hi]. */
static gboolean
int_list (const char *flag, const char *s, int lo, int hi, int *out, int max, int *n,
          GError **error)
{
  g_auto (GStrv) parts = g_strsplit (s, ",", -1);
  int k = 0;
  for (int i = 0; parts[i]; i++)
    {
      gint64 v;
      g_strstrip (parts[i]);
      if (k >= max)
        return flag_error (error, DDIM_ERROR_UNSUPPORTED, "--%s has more than %d entries", flag,
                           max);
      if (!g_ascii_string_to_signed (parts[i], 10, lo, hi, &v, NULL))
        return flag_error (error, DDIM_ERROR_FORMAT,
                           "--%s needs comma-separated integers from %d to %d, not '%s'", flag,
                           lo, hi, s);
      out[k++] = (int) v;
    }
  *n = k;
  return TRUE;
}

static gboolean
to_config (const Flags *f, DdimUNetConfig *c, DdimSchedule **schedule_out, GError **error)
{
  if (f->class_cond)
    return flag_error (error, DDIM_ERROR_UNSUPPORTED,
                       "class-conditional models (--class_cond True) are not supported: they "
                       "need a class label for every evaluation, which DDIM inversion of a "
                       "photo does not have");
  if (f->image_size < 1 || f->image_size > 16384)
    return flag_error (error, DDIM_ERROR_FORMAT, "--image_size %d is not valid", f->image_size);
  if (f->num_channels < 1 || f->num_channels > 65536)
    return flag_error (error, DDIM_ERROR_FORMAT, "--num_channels %d is not valid",
                       f->num_channels);
  if (f->diffusion_steps < 2 || f->diffusion_steps > 100000)
    return flag_error (error, DDIM_ERROR_FORMAT, "--diffusion_steps %d is not valid",
                       f->diffusion_steps);
  if (f->rescale_timesteps && f->diffusion_steps != 1000)
    return flag_error (error, DDIM_ERROR_UNSUPPORTED,
                       "--rescale_timesteps True with --diffusion_steps %d (the model sees "
                       "timesteps scaled by 1000/T) is not supported", f->diffusion_steps);
  if (f->num_heads < 1 && f->num_head_channels == -1)
    return flag_error (error, DDIM_ERROR_FORMAT, "--num_heads %d is not valid", f->num_heads);
  if (f->num_head_channels == 0 || f->num_head_channels < -1)
    return flag_error (error, DDIM_ERROR_FORMAT, "--num_head_channels %d is not valid",
                       f->num_head_channels);
  if (f->num_heads_upsample == 0 || f->num_heads_upsample < -1)
    return flag_error (error, DDIM_ERROR_FORMAT, "--num_heads_upsample %d is not valid",
                       f->num_heads_upsample);

  int mult[DDIM_MAX_LEVELS], n_mult = 0;
  if (*f->channel_mult == '\0')
    {
      /* create_model's defaults by size. */
      static const int m256[] = { 1, 1, 2, 2, 4, 4 }, m128[] = { 1, 1, 2, 3, 4 },
                       m64[] = { 1, 2, 3, 4 };
      const int *m = f->image_size == 256 ? m256 : f->image_size == 128 ? m128
                     : f->image_size == 64 ? m64 : NULL;
      if (f->image_size == 512)
        return flag_error (error, DDIM_ERROR_UNSUPPORTED,
                           "--image_size 512 without --channel_mult means channel_mult "
                           "(0.5,1,1,2,2,4,4), whose first level is narrower than the time "
                           "embedding; not supported");
      if (m == NULL)
        return flag_error (error, DDIM_ERROR_FORMAT,
                           "--image_size %d needs --channel_mult (guided-diffusion has "
                           "defaults for 64, 128, 256 and 512 only)", f->image_size);
      n_mult = f->image_size == 256 ? 6 : f->image_size == 128 ? 5 : 4;
      memcpy (mult, m, sizeof (int) * n_mult);
    }
  else if (!int_list ("channel_mult", f->channel_mult, 1, 1024, mult, DDIM_MAX_LEVELS, &n_mult,
                      error))
    return FALSE;
  if (mult[0] != 1)
    return flag_error (error, DDIM_ERROR_UNSUPPORTED,
                       "--channel_mult must start with 1 (the first level as wide as the time "
                       "embedding's input), not %d", mult[0]);
  int attn_res[32], n_attn = 0;
  if (!int_list ("attention_resolutions", f->attention_resolutions, 1, 1 << 20, attn_res,
                 G_N_ELEMENTS (attn_res), &n_attn, error))
    return FALSE;

  ddim_unet_config_init (c);
  c->sample_size = f->image_size;
  c->in_channels = 3;
  c->out_channels = 3;
  c->learned_sigma = f->learn_sigma;
  c->flip_sin_to_cos = TRUE;
  c->freq_shift = 0;
  c->n_levels = n_mult;
  c->layers_per_block = f->num_res_blocks;
  c->downsample_padding = 1;
  c->norm_num_groups = 32;
  c->attn_norm_num_groups = 32;
  c->norm_eps = 1e-5;
  c->scale_shift = f->use_scale_shift_norm;
  c->add_attention = TRUE;
  c->downsample_type = c->upsample_type = f->resblock_updown ? DDIM_RESAMPLE_RESNET
                                                              : DDIM_RESAMPLE_CONV;
  if (f->num_head_channels != -1)
    c->attention_head_dim = f->num_head_channels;
  else
    {
      c->attention_head_dim = 0;
      c->attention_heads = f->num_heads;
      int up = f->num_heads_upsample == -1 ? f->num_heads : f->num_heads_upsample;
      c->attention_heads_up = up != f->num_heads ? up : 0;
    }
  for (int i = 0; i < n_mult; i++)
    {
      if ((gint64) mult[i] * f->num_channels > 65536)
        return flag_error (error, DDIM_ERROR_FORMAT, "--num_channels %d x channel_mult %d is "
                           "too large", f->num_channels, mult[i]);
      c->block_out_channels[i] = mult[i] * f->num_channels;
      /* Attention where the downsampling factor ds = 2^i is one of
       * image_size // r. */
      gboolean attn = FALSE;
      for (int k = 0; k < n_attn; k++)
        attn |= f->image_size / attn_res[k] == (1 << i);
      c->down_blocks[i] = attn ? DDIM_BLOCK_ATTENTION : DDIM_BLOCK_PLAIN;
      c->up_blocks[n_mult - 1 - i] = c->down_blocks[i];
    }
  if (c->layers_per_block < 1 || c->layers_per_block > 16)
    return flag_error (error, DDIM_ERROR_UNSUPPORTED, "--num_res_blocks %d is not supported "
                       "(1 to 16)", c->layers_per_block);
  if (!ddim_unet_config_validate (c, error))
    {
      g_prefix_error (error, "model_flags.txt (as a UNet2DModel): ");
      return FALSE;
    }

  DdimSchedule *s;
  if (g_str_equal (f->noise_schedule, "linear"))
    {
      double scale = 1000.0 / f->diffusion_steps;
      s = ddim_schedule_new_betas (DDIM_BETA_LINEAR, scale * 0.0001, scale * 0.02,
                                   f->diffusion_steps, DDIM_ALPHAS_FLOAT64);
    }
  else if (g_str_equal (f->noise_schedule, "cosine"))
    s = ddim_schedule_new_betas (DDIM_BETA_SQUAREDCOS_CAP_V2, 0.0001, 0.02, f->diffusion_steps,
                                 DDIM_ALPHAS_FLOAT64);
  else
    return flag_error (error, DDIM_ERROR_UNSUPPORTED,
                       "--noise_schedule '%s' is not supported (linear or cosine)",
                       f->noise_schedule);
  if (!(s->beta_start < 1 && s->beta_end < 1))
    {
      ddim_schedule_free (s);
      return flag_error (error, DDIM_ERROR_UNSUPPORTED,
                         "--diffusion_steps %d makes linear betas of 1 or more",
                         f->diffusion_steps);
    }
  s->prediction = f->predict_xstart ? DDIM_PREDICT_SAMPLE : DDIM_PREDICT_EPSILON;
  s->learned_variance = f->learn_sigma;
  s->clip_sample = TRUE;   /* image_sample.py: clip_denoised True */
  s->clip_sample_range = 1.0;
  if (schedule_out)
    *schedule_out = s;
  else
    ddim_schedule_free (s);
  return TRUE;
}

gboolean
ddim_adm_flags_parse (const char *text, gsize length, DdimUNetConfig *config,
                      DdimSchedule **schedule, gboolean *new_attention_order, GError **error)
{
  g_return_val_if_fail (text != NULL || length == 0, FALSE);
  g_return_val_if_fail (config != NULL, FALSE);
  if (schedule)
    *schedule = NULL;
  Flags f;
  flags_defaults (&f);
  gboolean ok = read_flags (text ? text : "", length, &f, error)
                && to_config (&f, config, schedule, error);
  if (ok && new_attention_order)
    *new_attention_order = f.use_new_attention_order;
  flags_clear (&f);
  return ok;
}

/* ---- key names -------------------------------------------------------- */

static const char *
resnet_key (const char *rest, const char **tail)
{
  static const char *map[][2] = {
    { "norm1.", "in_layers.0." }, { "conv1.", "in_layers.2." },
    { "time_emb_proj.", "emb_layers.1." }, { "norm2.", "out_layers.0." },
    { "conv2.", "out_layers.3." }, { "conv_shortcut.", "skip_connection." },
  };
  for (guint i = 0; i < G_N_ELEMENTS (map); i++)
    if (g_str_has_prefix (rest, map[i][0]))
      {
        *tail = rest + strlen (map[i][0]);
        return map[i][1];
      }
  return NULL;
}

static gboolean
resnet (const char *prefix, const char *rest, DdimCheckpointKey *k)
{
  const char *tail, *part = resnet_key (rest, &tail);
  if (part == NULL)
    return FALSE;
  k->key = g_strconcat (prefix, part, tail, NULL);
  return TRUE;
}

/* Heads of an attention layer of @channels, as weights.c counts them. */
static int
heads_of (const DdimUNetConfig *c, int channels, gboolean up)
{
  int fixed = up && c->attention_heads_up > 0 ? c->attention_heads_up : c->attention_heads;
  return fixed > 0 ? fixed : c->attention_head_dim > 0 ? channels / c->attention_head_dim : 1;
}

static gboolean
attention (const DdimUNetConfig *c, gboolean new_order, const char *prefix, const char *rest,
           int channels, gboolean up, DdimCheckpointKey *k)
{
  static const char *qkv[] = { "to_q.", "to_k.", "to_v." };
  if (g_str_has_prefix (rest, "group_norm."))
    {
      k->key = g_strconcat (prefix, "norm.", rest + strlen ("group_norm."), NULL);
      return TRUE;
    }
  if (g_str_has_prefix (rest, "to_out.0."))
    {
      k->key = g_strconcat (prefix, "proj_out.", rest + strlen ("to_out.0."), NULL);
      return TRUE;
    }
  for (int p = 0; p < 3; p++)
    if (g_str_has_prefix (rest, qkv[p]))
      {
        k->key = g_strconcat (prefix, "qkv.", rest + strlen (qkv[p]), NULL);
        k->part = p;
        k->heads = heads_of (c, channels, up);
        k->interleaved = !new_order;
        return TRUE;
      }
  return FALSE;
}

gboolean
ddim_adm_key (const DdimUNetConfig *c, gboolean new_order, const char *name,
              DdimCheckpointKey *k)
{
  int L = c->n_levels, nrb = c->layers_per_block, i, j, off = 0;
  *k = (DdimCheckpointKey) { NULL, -1, 0, FALSE };
  static const char *fixed[][2] = {
    { "conv_in.", "input_blocks.0.0." }, { "time_embedding.linear_1.", "time_embed.0." },
    { "time_embedding.linear_2.", "time_embed.2." }, { "conv_norm_out.", "out.0." },
    { "conv_out.", "out.2." },
  };
  for (guint f = 0; f < G_N_ELEMENTS (fixed); f++)
    if (g_str_has_prefix (name, fixed[f][0]))
      {
        k->key = g_strconcat (fixed[f][1], name + strlen (fixed[f][0]), NULL);
        return TRUE;
      }
  /* input_blocks: 0 is conv_in, then per level nrb resnets (+ attention)
   * and, but for the last level, one downsampling block. */
  if (sscanf (name, "down_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 && off > 0)
    {
      g_autofree char *p = g_strdup_printf ("input_blocks.%d.0.", 1 + i * (nrb + 1) + j);
      return resnet (p, name + off, k);
    }
  off = 0;
  if (sscanf (name, "down_blocks.%d.attentions.%d.%n", &i, &j, &off) == 2 && off > 0)
    {
      g_autofree char *p = g_strdup_printf ("input_blocks.%d.1.", 1 + i * (nrb + 1) + j);
      return attention (c, new_order, p, name + off, c->block_out_channels[i], FALSE, k);
    }
  off = 0;
  if (sscanf (name, "down_blocks.%d.downsamplers.0.%n", &i, &off) == 1 && off > 0)
    {
      int blk = 1 + i * (nrb + 1) + nrb;
      const char *rest = name + off;
      if (g_str_has_prefix (rest, "conv."))
        {
          k->key = g_strdup_printf ("input_blocks.%d.0.op.%s", blk, rest + strlen ("conv."));
          return TRUE;
        }
      g_autofree char *p = g_strdup_printf ("input_blocks.%d.0.", blk);
      return resnet (p, rest, k);
    }
  static const char *mid[][2] = {
    { "mid_block.resnets.0.", "middle_block.0." }, { "mid_block.resnets.1.", "middle_block.2." },
  };
  for (guint m = 0; m < G_N_ELEMENTS (mid); m++)
    if (g_str_has_prefix (name, mid[m][0]))
      return resnet (mid[m][1], name + strlen (mid[m][0]), k);
  if (g_str_has_prefix (name, "mid_block.attentions.0."))
    return attention (c, new_order, "middle_block.1.", name + strlen ("mid_block.attentions.0."),
                      c->block_out_channels[L - 1], FALSE, k);
  /* output_blocks: nrb + 1 per level, top level first; the upsampler sits
   * in the level's last block after the resnet (and attention). */
  off = 0;
  if (sscanf (name, "up_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 && off > 0)
    {
      g_autofree char *p = g_strdup_printf ("output_blocks.%d.0.", i * (nrb + 1) + j);
      return resnet (p, name + off, k);
    }
  off = 0;
  if (sscanf (name, "up_blocks.%d.attentions.%d.%n", &i, &j, &off) == 2 && off > 0)
    {
      g_autofree char *p = g_strdup_printf ("output_blocks.%d.1.", i * (nrb + 1) + j);
      return attention (c, new_order, p, name + off, c->block_out_channels[L - 1 - i], TRUE, k);
    }
  off = 0;
  if (sscanf (name, "up_blocks.%d.upsamplers.0.%n", &i, &off) == 1 && off > 0 && i < L)
    {
      int blk = i * (nrb + 1) + nrb;
      int idx = c->up_blocks[i] == DDIM_BLOCK_ATTENTION ? 2 : 1;
      const char *rest = name + off;
      if (g_str_has_prefix (rest, "conv."))
        {
          k->key = g_strdup_printf ("output_blocks.%d.%d.%s", blk, idx, rest);
          return TRUE;
        }
      g_autofree char *p = g_strdup_printf ("output_blocks.%d.%d.", blk, idx);
      return resnet (p, rest, k);
    }
  return FALSE;
}
