/* Weights from any family's checkpoint: a lookup over safetensors and
 * torch.save files (single, or shards listed by an index json), then each UNet2DModel
 * parameter taken from its family's key (family-*.c), with fused qkv
 * tensors split into q, k and v. */
#include <json-glib/json-glib.h>
#include <string.h>

#include "ddim/error.h"
#include "ddim/torch-file.h"
#include "model/family-private.h"
#include "model/unet-private.h"

typedef struct {
  DdimSafetensors *st;      /* one of these two */
  DdimTorchFile   *torch;
  char            *path;
} Shard;

struct _DdimWeightSource {
  GPtrArray  *shards;     /* Shard*, the first is the first file */
  GHashTable *index;      /* tensor name -> Shard* (sharded), or NULL */
};

static void
shard_free (gpointer p)
{
  Shard *s = p;
  ddim_safetensors_free (s->st);
  ddim_torch_file_free (s->torch);
  g_free (s->path);
  g_free (s);
}

void
ddim_weight_source_free (DdimWeightSource *src)
{
  if (src == NULL)
    return;
  g_ptr_array_unref (src->shards);
  if (src->index)
    g_hash_table_unref (src->index);
  g_free (src);
}

/* One weights file: its format from its first bytes. */
static Shard *
open_file (const char *path, gboolean use_ema, DdimWeightsFormat *format, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_autoptr (GFile) file = g_file_new_for_path (path);
  g_autoptr (GFileInputStream) in = g_file_read (file, NULL, &local);
  if (in == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read %s: %s", path, local->message);
      return NULL;
    }
  guint8 head[64] = { 0 };
  gsize got = 0;
  if (!g_input_stream_read_all (G_INPUT_STREAM (in), head, sizeof head, &got, NULL, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read %s: %s", path, local->message);
      return NULL;
    }
  g_input_stream_close (G_INPUT_STREAM (in), NULL, NULL);
  Shard *s = g_new0 (Shard, 1);
  s->path = g_strdup (path);
  if (ddim_torch_file_sniff (head, got))
    {
      /* ermongroup's training list holds the model and its EMA; its
       * sampler takes the EMA when config.yml says model.ema. */
      s->torch = ddim_torch_file_open (path, use_ema ? DDIM_TORCH_SELECT_EMA
                                                     : DDIM_TORCH_SELECT_MODEL, error);
      if (s->torch == NULL)
        return shard_free (s), NULL;
      if (format)
        *format = ddim_torch_file_get_format (s->torch) == DDIM_TORCH_FORMAT_ZIP
                  ? DDIM_WEIGHTS_TORCH_ZIP : DDIM_WEIGHTS_TORCH_LEGACY;
      return s;
    }
  s->st = ddim_safetensors_open (path, error);
  if (s->st == NULL)
    return shard_free (s), NULL;
  if (format)
    *format = DDIM_WEIGHTS_SAFETENSORS;
  return s;
}

/* An index json: {"weight_map": {"tensor": "shard file", ...}}. */
static gboolean
open_index (DdimWeightSource *src, const char *path, gboolean use_ema,
            DdimWeightsFormat *format, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) local = NULL;
  if (!json_parser_load_from_file (parser, path, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "%s is not valid JSON: %s", path,
                   local->message);
      return FALSE;
    }
  JsonNode *root = json_parser_get_root (parser);
  JsonObject *map = NULL;
  if (root && JSON_NODE_HOLDS_OBJECT (root))
    {
      JsonNode *wm = json_object_get_member (json_node_get_object (root), "weight_map");
      if (wm && JSON_NODE_HOLDS_OBJECT (wm))
        map = json_node_get_object (wm);
    }
  if (map == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "%s: expected an object with a \"weight_map\" object", path);
      return FALSE;
    }
  g_autofree char *dir = g_path_get_dirname (path);
  g_autoptr (GHashTable) by_file = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  src->index = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  /* Shards in the order the weight map first names them. */
  g_autoptr (GList) members = json_object_get_members (map);
  for (GList *l = members; l; l = l->next)
    {
      JsonNode *v = json_object_get_member (map, l->data);
      const char *file = JSON_NODE_HOLDS_VALUE (v) && json_node_get_value_type (v) == G_TYPE_STRING
                         ? json_node_get_string (v) : NULL;
      if (file == NULL || *file == '\0' || strchr (file, '/') || strchr (file, '\\')
          || g_str_equal (file, ".") || g_str_equal (file, ".."))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "%s: the shard of '%s' must be a file name in the same folder", path,
                       (const char *) l->data);
          return FALSE;
        }
      Shard *s = g_hash_table_lookup (by_file, file);
      if (s == NULL)
        {
          g_autofree char *shard_path = g_build_filename (dir, file, NULL);
          s = open_file (shard_path, use_ema, src->shards->len == 0 ? format : NULL, error);
          if (s == NULL)
            return FALSE;
          g_ptr_array_add (src->shards, s);
          g_hash_table_insert (by_file, g_strdup (file), s);
        }
      g_hash_table_insert (src->index, g_strdup (l->data), s);
    }
  if (src->shards->len == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "%s: the weight map is empty", path);
      return FALSE;
    }
  return TRUE;
}

DdimWeightSource *
ddim_weight_source_open (const char *path, gboolean use_ema, DdimWeightsFormat *format,
                         GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  g_autoptr (DdimWeightSource) src = g_new0 (DdimWeightSource, 1);
  src->shards = g_ptr_array_new_with_free_func (shard_free);
  if (g_str_has_suffix (path, ".index.json"))
    {
      if (!open_index (src, path, use_ema, format, error))
        return NULL;
    }
  else
    {
      Shard *s = open_file (path, use_ema, format, error);
      if (s == NULL)
        return NULL;
      g_ptr_array_add (src->shards, s);
    }
  return g_steal_pointer (&src);
}

static const DdimTensorInfo *
shard_lookup (Shard *s, const char *name)
{
  return s->torch ? ddim_torch_file_lookup (s->torch, name) : ddim_safetensors_lookup (s->st, name);
}

const DdimTensorInfo *
ddim_weight_source_lookup (DdimWeightSource *src, const char *name)
{
  if (src->index)
    {
      Shard *s = g_hash_table_lookup (src->index, name);
      return s ? shard_lookup (s, name) : NULL;
    }
  return shard_lookup (g_ptr_array_index (src->shards, 0), name);
}

const char *
ddim_weight_source_first_path (DdimWeightSource *src)
{
  return ((Shard *) g_ptr_array_index (src->shards, 0))->path;
}

char *
ddim_weight_source_dtype (DdimWeightSource *src)
{
  const char *first = NULL;
  for (guint k = 0; k < src->shards->len; k++)
    {
      Shard *s = g_ptr_array_index (src->shards, k);
      guint n = s->torch ? ddim_torch_file_get_n_tensors (s->torch)
                         : ddim_safetensors_get_n_tensors (s->st);
      for (guint i = 0; i < n; i++)
        {
          const DdimTensorInfo *info = s->torch ? ddim_torch_file_get_info_nth (s->torch, i)
                                                : ddim_safetensors_get_info_nth (s->st, i);
          const char *d = ddim_dtype_name (info->dtype);
          if (first == NULL)
            first = d;
          else if (!g_str_equal (first, d))
            return g_strdup ("mixed");
        }
    }
  return g_strdup (first ? first : "none");
}

/* ---- parameters from the source ---------------------------------------- */

/* The name a tensor has in old diffusers checkpoints (attention keys
 * before diffusers 0.14), or NULL if the scheme is the same. */
static char *
old_attention_name (const char *name)
{
  static const char *map[][2] = {
    { ".to_q.", ".query." }, { ".to_k.", ".key." },
    { ".to_v.", ".value." }, { ".to_out.0.", ".proj_attn." },
  };
  for (guint i = 0; i < G_N_ELEMENTS (map); i++)
    {
      const char *hit = strstr (name, map[i][0]);
      if (hit)
        {
          g_autofree char *head = g_strndup (name, hit - name);
          return g_strconcat (head, map[i][1], hit + strlen (map[i][0]), NULL);
        }
    }
  return NULL;
}

/* Dimensions without trailing 1s past the first (a 1x1 conv [o, i, 1, 1]
 * or a Conv1d [o, i, 1] is the linear layer [o, i]). */
static int
squeezed (int ndim, const gint64 *shape, gint64 *out)
{
  while (ndim > 1 && shape[ndim - 1] == 1)
    ndim--;
  for (int d = 0; d < ndim; d++)
    out[d] = shape[d];
  return ndim;
}

static char *
shape_string (int ndim, const gint64 *shape)
{
  GString *s = g_string_new ("[");
  for (int d = 0; d < ndim; d++)
    g_string_append_printf (s, "%s%" G_GINT64_FORMAT, d ? ", " : "", shape[d]);
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

/* Copies tensor @info into @dst for entry @e: whole, or the q/k/v rows. */
static gboolean
load_entry (const DdimParamEntry *e, const DdimTensorInfo *info, const DdimCheckpointKey *k,
            float *dst, const char *file_name, const char *what, GError **error)
{
  gint64 want[DDIM_MAX_DIMS], got[DDIM_MAX_DIMS];
  int nw = squeezed (e->ndim, e->shape, want);
  int ng = squeezed (info->ndim, info->shape, got);
  if (k->part >= 0)
    want[0] *= 3;
  gboolean same = nw == ng;
  for (int d = 0; same && d < nw; d++)
    same = want[d] == got[d];
  if (!same || (k->part >= 0 && (k->heads < 1 || e->shape[0] % k->heads != 0)))
    {
      g_autofree char *ws = shape_string (nw, want), *gs = shape_string (info->ndim, info->shape);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "%s: tensor '%s' has shape %s, %s implies %s", file_name, info->name, gs,
                   what, ws);
      return FALSE;
    }
  if (k->part < 0)
    return ddim_tensor_info_to_f32 (info, dst, error);
  g_autofree float *all = g_new (float, info->n_elements);
  if (!ddim_tensor_info_to_f32 (info, all, error))
    return FALSE;
  gsize C = (gsize) e->shape[0], row = e->size / C, ch = C / k->heads;
  for (int h = 0; h < k->heads; h++)
    {
      gsize src_row = k->interleaved ? 3 * ch * h + k->part * ch : k->part * C + ch * h;
      memcpy (dst + h * ch * row, all + src_row * row, ch * row * sizeof (float));
    }
  return TRUE;
}

DdimUNet *
ddim_unet_new_from_source (const DdimUNetConfig *config, DdimWeightSource *src,
                           const DdimCheckpointLayout *layout, const char *file_name,
                           GError **error)
{
  g_autoptr (DdimUNet) u = ddim_unet_alloc (config);
  const char *what = layout->family == DDIM_MODEL_FAMILY_ADM ? "model_flags.txt"
                     : layout->family == DDIM_MODEL_FAMILY_ERMONGROUP ? "config.yml"
                     : "config.json";
  for (guint i = 0; i < u->entries->len; i++)
    {
      DdimParamEntry *e = &g_array_index (u->entries, DdimParamEntry, i);
      DdimCheckpointKey k = { NULL, -1, 0, FALSE };
      const DdimTensorInfo *info = NULL;
      switch (layout->family)
        {
        case DDIM_MODEL_FAMILY_ERMONGROUP:
          k.key = ddim_ermongroup_key (config, e->name);
          break;
        case DDIM_MODEL_FAMILY_ADM:
          ddim_adm_key (config, layout->new_attention_order, e->name, &k);
          break;
        case DDIM_MODEL_FAMILY_DIFFUSERS:
        default:
          k.key = g_strdup (e->name);
          break;
        }
      g_autofree char *key = k.key;
      if (key)
        info = ddim_weight_source_lookup (src, key);
      if (info == NULL && layout->family == DDIM_MODEL_FAMILY_DIFFUSERS)
        {
          g_autofree char *old = old_attention_name (e->name);
          if (old)
            info = ddim_weight_source_lookup (src, old);
        }
      if (info == NULL)
        {
          if (key && !g_str_equal (key, e->name))
            g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                         "%s: missing tensor '%s' (UNet2DModel '%s') required by %s",
                         file_name, key, e->name, what);
          else
            g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                         "%s: missing tensor '%s' required by %s", file_name, e->name, what);
          return NULL;
        }
      if (!load_entry (e, info, &k, u->params + e->offset, file_name, what, error))
        return NULL;
    }
  return g_steal_pointer (&u);
}
