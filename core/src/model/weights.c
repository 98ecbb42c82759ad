/* The parameter table of a UNet2DModel, derived from its config with
 * diffusers' names, and loading it from a safetensors file. */
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "ddim/safetensors.h"
#include "model/family-private.h"
#include "model/unet-private.h"

/* Table building runs the same code twice: the first pass (params == NULL)
 * records names, shapes and offsets, the second hands out storage. */
typedef struct {
  DdimUNet *unet;
  gsize     offset;
  guint     index;
} Builder;

static float *
add_param (Builder *bld, const char *name, int ndim, gint64 d0, gint64 d1, gint64 d2, gint64 d3)
{
  DdimUNet *u = bld->unet;
  gsize offset = bld->offset;
  if (u->params != NULL)
    {
      /* Second pass: the table exists, hand out storage. */
      DdimParamEntry *e = &g_array_index (u->entries, DdimParamEntry, bld->index++);
      bld->offset += e->size;
      return u->params + offset;
    }
  DdimParamEntry e = { 0 };
  gint64 dims[4] = { d0, d1, d2, d3 };
  e.name = g_strdup (name);
  e.ndim = ndim;
  e.size = 1;
  for (int i = 0; i < ndim; i++)
    {
      e.shape[i] = dims[i];
      e.size *= (gsize) dims[i];
    }
  e.offset = offset;
  bld->offset += e.size;
  g_array_append_val (u->entries, e);
  g_hash_table_insert (u->by_name, e.name, GUINT_TO_POINTER (u->entries->len));
  return NULL;
}

static void
add_conv (Builder *b, DdimConvLayer *l, const char *prefix, int cout, int cin, int k)
{
  g_autofree char *wn = g_strconcat (prefix, ".weight", NULL);
  g_autofree char *bn = g_strconcat (prefix, ".bias", NULL);
  l->cout = cout;
  l->cin = cin;
  l->k = k;
  l->w = add_param (b, wn, 4, cout, cin, k, k);
  l->b = add_param (b, bn, 1, cout, 0, 0, 0);
}

static void
add_linear (Builder *b, DdimLinearLayer *l, const char *prefix, int out, int in)
{
  g_autofree char *wn = g_strconcat (prefix, ".weight", NULL);
  g_autofree char *bn = g_strconcat (prefix, ".bias", NULL);
  l->out = out;
  l->in = in;
  l->w = add_param (b, wn, 2, out, in, 0, 0);
  l->b = add_param (b, bn, 1, out, 0, 0, 0);
}

static void
add_norm (Builder *b, DdimNormLayer *l, const char *prefix, int channels, int groups)
{
  g_autofree char *wn = g_strconcat (prefix, ".weight", NULL);
  g_autofree char *bn = g_strconcat (prefix, ".bias", NULL);
  l->channels = channels;
  l->groups = groups;
  l->gamma = add_param (b, wn, 1, channels, 0, 0, 0);
  l->beta = add_param (b, bn, 1, channels, 0, 0, 0);
}

static void
add_resnet (Builder *b, DdimResnetLayer *r, const char *prefix, int cin, int cout, float scale)
{
  const DdimUNetConfig *c = &b->unet->config;
  int temb = ddim_unet_config_temb_dim (c);
  g_autofree char *n1 = g_strconcat (prefix, ".norm1", NULL);
  g_autofree char *c1 = g_strconcat (prefix, ".conv1", NULL);
  g_autofree char *tp = g_strconcat (prefix, ".time_emb_proj", NULL);
  g_autofree char *n2 = g_strconcat (prefix, ".norm2", NULL);
  g_autofree char *c2 = g_strconcat (prefix, ".conv2", NULL);
  g_autofree char *sc = g_strconcat (prefix, ".conv_shortcut", NULL);
  r->cin = cin;
  r->cout = cout;
  r->output_scale = scale;
  r->resample = DDIM_RESNET_SAME;
  add_norm (b, &r->norm1, n1, cin, c->norm_num_groups);
  add_conv (b, &r->conv1, c1, cout, cin, 3);
  add_linear (b, &r->temb_proj, tp, c->scale_shift ? 2 * cout : cout, temb);
  add_norm (b, &r->norm2, n2, cout, c->norm_num_groups);
  add_conv (b, &r->conv2, c2, cout, cout, 3);
  if (cin != cout)
    add_conv (b, &r->shortcut, sc, cout, cin, 1);
}

static void
add_attention (Builder *b, DdimAttentionLayer *a, const char *prefix, int channels,
               int norm_groups, gboolean up)
{
  const DdimUNetConfig *c = &b->unet->config;
  g_autofree char *gn = g_strconcat (prefix, ".group_norm", NULL);
  g_autofree char *q = g_strconcat (prefix, ".to_q", NULL);
  g_autofree char *k = g_strconcat (prefix, ".to_k", NULL);
  g_autofree char *v = g_strconcat (prefix, ".to_v", NULL);
  g_autofree char *o = g_strconcat (prefix, ".to_out.0", NULL);
  a->channels = channels;
  int fixed = up && c->attention_heads_up > 0 ? c->attention_heads_up : c->attention_heads;
  a->heads = fixed > 0 ? fixed
             : c->attention_head_dim > 0 ? channels / c->attention_head_dim : 1;
  a->has_norm = norm_groups > 0;
  if (a->has_norm)
    add_norm (b, &a->norm, gn, channels, norm_groups);
  add_linear (b, &a->q, q, channels, channels);
  add_linear (b, &a->k, k, channels, channels);
  add_linear (b, &a->v, v, channels, channels);
  add_linear (b, &a->o, o, channels, channels);
}

/* A block's downsampler / upsampler: "downsamplers.0.conv" (conv),
 * nothing (pooling), or a resnet named "downsamplers.0" (diffusers'
 * ResnetBlock2D with down / up). */
static void
add_resampler (Builder *b, DdimBlock *blk, const char *blocks, int i, gboolean down)
{
  const DdimUNetConfig *c = &b->unet->config;
  DdimResampleType type = down ? c->downsample_type : c->upsample_type;
  const char *part = down ? "downsamplers" : "upsamplers";
  int ch = blk->channels;
  if (type == DDIM_RESAMPLE_RESNET)
    {
      g_autofree char *rp = g_strdup_printf ("%s.%d.%s.0", blocks, i, part);
      blk->resample_kind = DDIM_RESAMPLER_RESNET;
      add_resnet (b, &blk->resample_resnet, rp, ch, ch, 1.f);
      blk->resample_resnet.resample = down ? DDIM_RESNET_DOWN : DDIM_RESNET_UP;
    }
  else if (!c->resample_with_conv)
    blk->resample_kind = DDIM_RESAMPLER_POOL;
  else
    {
      g_autofree char *cp = g_strdup_printf ("%s.%d.%s.0.conv", blocks, i, part);
      blk->resample_kind = DDIM_RESAMPLER_CONV;
      add_conv (b, &blk->resample, cp, ch, ch, 3);
    }
}

static void
build_table (Builder *b)
{
  DdimUNet *u = b->unet;
  const DdimUNetConfig *c = &u->config;
  const int *boc = c->block_out_channels;
  int L = c->n_levels;
  int temb = ddim_unet_config_temb_dim (c);

  add_conv (b, &u->conv_in, "conv_in", boc[0], c->in_channels, 3);
  add_linear (b, &u->temb1, "time_embedding.linear_1", temb, boc[0]);
  add_linear (b, &u->temb2, "time_embedding.linear_2", temb, temb);

  int out_ch = boc[0];
  for (int i = 0; i < L; i++)
    {
      DdimBlock *blk = &u->down[i];
      int in_ch = out_ch;
      out_ch = boc[i];
      blk->channels = out_ch;
      blk->n_resnets = c->layers_per_block;
      blk->has_attention = c->down_blocks[i] == DDIM_BLOCK_ATTENTION;
      for (int j = 0; j < blk->n_resnets; j++)
        {
          g_autofree char *rp = g_strdup_printf ("down_blocks.%d.resnets.%d", i, j);
          add_resnet (b, &blk->resnets[j], rp, j == 0 ? in_ch : out_ch, out_ch, 1.f);
          if (blk->has_attention)
            {
              g_autofree char *ap = g_strdup_printf ("down_blocks.%d.attentions.%d", i, j);
              add_attention (b, &blk->attentions[j], ap, out_ch, c->norm_num_groups, FALSE);
            }
        }
      blk->has_resample = i < L - 1;
      if (blk->has_resample)
        add_resampler (b, blk, "down_blocks", i, TRUE);
    }

  int mid = boc[L - 1];
  add_resnet (b, &u->mid_resnets[0], "mid_block.resnets.0", mid, mid,
              (float) c->mid_block_scale_factor);
  u->mid_has_attention = c->add_attention;
  if (c->add_attention)
    {
      /* diffusers: the mid attention's norm has attn_norm_num_groups, else
       * norm_num_groups with the default time shift and none otherwise. */
      int groups = c->attn_norm_num_groups > 0 ? c->attn_norm_num_groups
                   : (c->scale_shift ? 0 : c->norm_num_groups);
      add_attention (b, &u->mid_attention, "mid_block.attentions.0", mid, groups, FALSE);
    }
  add_resnet (b, &u->mid_resnets[1], "mid_block.resnets.1", mid, mid,
              (float) c->mid_block_scale_factor);

  int prev_out = boc[L - 1];
  for (int i = 0; i < L; i++)
    {
      DdimBlock *blk = &u->up[i];
      int out = boc[L - 1 - i];
      int in = boc[L - 1 - MIN (i + 1, L - 1)];
      blk->channels = out;
      blk->n_resnets = c->layers_per_block + 1;
      blk->has_attention = c->up_blocks[i] == DDIM_BLOCK_ATTENTION;
      for (int j = 0; j < blk->n_resnets; j++)
        {
          int skip = j == blk->n_resnets - 1 ? in : out;
          int rin = (j == 0 ? prev_out : out) + skip;
          g_autofree char *rp = g_strdup_printf ("up_blocks.%d.resnets.%d", i, j);
          add_resnet (b, &blk->resnets[j], rp, rin, out, 1.f);
          if (blk->has_attention)
            {
              g_autofree char *ap = g_strdup_printf ("up_blocks.%d.attentions.%d", i, j);
              add_attention (b, &blk->attentions[j], ap, out, c->norm_num_groups, TRUE);
            }
        }
      blk->has_resample = i < L - 1;
      if (blk->has_resample)
        add_resampler (b, blk, "up_blocks", i, FALSE);
      prev_out = out;
    }

  add_norm (b, &u->norm_out, "conv_norm_out", boc[0], c->norm_num_groups);
  /* With a learned variance the table holds all 2 * out_channels rows
   * (eps first) but only the eps rows, the first, are computed. */
  add_conv (b, &u->conv_out, "conv_out", c->learned_sigma ? 2 * c->out_channels : c->out_channels,
            boc[0], 3);
  u->conv_out.cout = c->out_channels;
}

static void
free_entry (gpointer p)
{
  g_free (((DdimParamEntry *) p)->name);
}

DdimUNet *
ddim_unet_alloc (const DdimUNetConfig *config)
{
  DdimUNet *u = g_new0 (DdimUNet, 1);
  u->config = *config;
  u->entries = g_array_new (FALSE, TRUE, sizeof (DdimParamEntry));
  g_array_set_clear_func (u->entries, free_entry);
  u->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  Builder b = { u, 0, 0 };
  build_table (&b);
  u->n_params = b.offset;
  u->params = g_new0 (float, u->n_params);
  Builder b2 = { u, 0, 0 };
  build_table (&b2);
  ddim_arena_init (&u->arena);
  ddim_arena_init (&u->grad_arena);
  ddim_arena_init (&u->pair_arena);
  u->parallel = ddim_parallel_new ((int) g_get_num_processors ());
  u->arena.parallel = u->parallel;
  return u;
}

void
ddim_unet_free (DdimUNet *u)
{
  if (u == NULL)
    return;
  g_free (u->params);
  g_hash_table_unref (u->by_name);
  g_array_unref (u->entries);
  ddim_arena_clear (&u->arena);
  ddim_arena_clear (&u->grad_arena);
  ddim_arena_clear (&u->pair_arena);
  ddim_parallel_free (u->parallel);
  if (u->tape)
    {
      ddim_arena_clear (&u->tape->store);
      g_free (u->tape);
    }
  g_free (u);
}

DdimUNet *
ddim_unet_new_from_safetensors (const DdimUNetConfig *config, const char *weights_path,
                                GError **error)
{
  g_autoptr (DdimWeightSource) src = ddim_weight_source_open (weights_path, FALSE, NULL, error);
  if (src == NULL)
    return NULL;
  g_autofree char *base = g_path_get_basename (weights_path);
  DdimCheckpointLayout layout = { DDIM_MODEL_FAMILY_DIFFUSERS, FALSE, FALSE };
  return ddim_unet_new_from_source (config, src, &layout, base, error);
}

/* splitmix64: a tiny deterministic generator for random initialisation. */
static guint64
next_u64 (guint64 *s)
{
  guint64 z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static float
uniform_pm1 (guint64 *s)
{
  return (float) ((next_u64 (s) >> 11) * (1.0 / 9007199254740992.0)) * 2.f - 1.f;
}

DdimUNet *
ddim_unet_new_random (const DdimUNetConfig *config, guint64 seed)
{
  DdimUNet *u = ddim_unet_alloc (config);
  guint64 s = seed;
  for (guint i = 0; i < u->entries->len; i++)
    {
      DdimParamEntry *e = &g_array_index (u->entries, DdimParamEntry, i);
      float *p = u->params + e->offset;
      gboolean is_norm = strstr (e->name, "norm") != NULL;
      gboolean is_bias = g_str_has_suffix (e->name, ".bias");
      double fan_in = 1;
      for (int d = 1; d < e->ndim; d++)
        fan_in *= (double) e->shape[d];
      /* Uniform(-a, a) with a = sqrt(3 / fan_in) has variance 1/fan_in. */
      float a = (float) sqrt (3.0 / fan_in);
      for (gsize j = 0; j < e->size; j++)
        {
          float r = uniform_pm1 (&s);
          if (is_norm && !is_bias)
            p[j] = 1.f + 0.1f * r;
          else if (is_bias)
            p[j] = 0.05f * r;
          else
            p[j] = a * r;
        }
    }
  return u;
}

void
ddim_unet_set_n_threads (DdimUNet *u, int n_threads)
{
  g_return_if_fail (u != NULL);
  ddim_parallel_free (u->parallel);
  u->parallel = ddim_parallel_new (n_threads);
  u->arena.parallel = u->parallel;
}

const DdimUNetConfig *
ddim_unet_get_config (DdimUNet *unet)
{
  return &unet->config;
}

gsize
ddim_unet_get_n_params (DdimUNet *unet)
{
  return unet->n_params;
}

guint
ddim_unet_get_n_tensors (DdimUNet *unet)
{
  return unet->entries->len;
}

const char *
ddim_unet_get_tensor (DdimUNet *unet, guint index, int *ndim, gint64 shape[4], float **data)
{
  g_return_val_if_fail (index < unet->entries->len, NULL);
  DdimParamEntry *e = &g_array_index (unet->entries, DdimParamEntry, index);
  if (ndim)
    *ndim = e->ndim;
  if (shape)
    memcpy (shape, e->shape, sizeof e->shape);
  if (data)
    *data = unet->params + e->offset;
  return e->name;
}

gssize
ddim_unet_get_param_offset (DdimUNet *unet, const char *name)
{
  guint idx = GPOINTER_TO_UINT (g_hash_table_lookup (unet->by_name, name));
  if (idx == 0)
    return -1;
  return (gssize) g_array_index (unet->entries, DdimParamEntry, idx - 1).offset;
}

float *
ddim_unet_get_params (DdimUNet *unet)
{
  return unet->params;
}

float *
ddim_unet_lookup_tensor (DdimUNet *unet, const char *name, gsize *n_elements)
{
  guint idx = GPOINTER_TO_UINT (g_hash_table_lookup (unet->by_name, name));
  if (idx == 0)
    return NULL;
  DdimParamEntry *e = &g_array_index (unet->entries, DdimParamEntry, idx - 1);
  if (n_elements)
    *n_elements = e->size;
  return unet->params + e->offset;
}
