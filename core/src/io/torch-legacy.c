/* Legacy (pre-1.6) torch.save reader; see torch-legacy.h. */

#include "io/torch-legacy.h"
#include "ddim/error.h"

#include <string.h>

#define LEGACY_PROTOCOL 1001

static gboolean G_GNUC_PRINTF (2, 3)
fail (GError **error, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  g_autofree char *what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "legacy torch file: %s", what);
  return FALSE;
}

static const DdimPickleValue *
dict_get (const DdimPickleValue *dict, const char *key)
{
  for (guint i = 0; i + 1 < dict->u.seq.n; i += 2)
    if (dict->u.seq.items[i]->kind == DDIM_PV_STR && strcmp (dict->u.seq.items[i]->u.str.s, key) == 0)
      return dict->u.seq.items[i + 1];
  return NULL;
}

/* The element type of each storage key, from the object pickle's
 * persistent ids: key (borrowed) -> the first DDIM_PV_STORAGE value. */
static GHashTable *
storage_types (DdimPickle *object, GError **error)
{
  g_autoptr (GHashTable) types = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < ddim_pickle_get_n_values (object); i++)
    {
      const DdimPickleValue *v = ddim_pickle_get_value (object, i);
      if (v->kind != DDIM_PV_STORAGE)
        continue;
      const DdimPickleValue *seen = g_hash_table_lookup (types, v->u.storage.key);
      if (seen == NULL)
        g_hash_table_insert (types, (gpointer) v->u.storage.key, (gpointer) v);
      else if (seen->u.storage.dtype != v->u.storage.dtype
               || seen->u.storage.numel != v->u.storage.numel)
        return fail (error, "storage '%s' is used with two different types or sizes",
                     v->u.storage.key), NULL;
    }
  return g_steal_pointer (&types);
}

static DdimPickle *
load_next (const guint8 *data, gsize length, gsize *pos, const char *where, GError **error)
{
  gsize used;
  DdimPickle *pickle = ddim_pickle_load (data + *pos, length - *pos, DDIM_PICKLE_LEGACY, where,
                                         &used, error);
  if (pickle != NULL)
    *pos += used;
  return pickle;
}

DdimPickle *
ddim_torch_legacy_read (const guint8 *data, gsize length, GHashTable **records, GError **error)
{
  g_return_val_if_fail (records != NULL, NULL);
  gsize pos = 0;
  if (length < DDIM_TORCH_LEGACY_MAGIC_LEN
      || memcmp (data, DDIM_TORCH_LEGACY_MAGIC, DDIM_TORCH_LEGACY_MAGIC_LEN) != 0)
    return fail (error, "wrong magic number"), NULL;
  pos = DDIM_TORCH_LEGACY_MAGIC_LEN;

  g_autoptr (DdimPickle) version = load_next (data, length, &pos, "legacy protocol pickle", error);
  if (version == NULL)
    return NULL;
  const DdimPickleValue *v = ddim_pickle_get_root (version);
  if (v->kind != DDIM_PV_INT || v->u.i != LEGACY_PROTOCOL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "legacy torch file: protocol version is not %d", LEGACY_PROTOCOL);
      return NULL;
    }
  g_autoptr (DdimPickle) sys_info = load_next (data, length, &pos, "legacy sys_info pickle", error);
  if (sys_info == NULL)
    return NULL;
  v = ddim_pickle_get_root (sys_info);
  if (v->kind != DDIM_PV_DICT)
    return fail (error, "sys_info is a %s, not a dict", ddim_pickle_value_kind_name (v)), NULL;
  const DdimPickleValue *little = dict_get (v, "little_endian");
  if (little != NULL && little->kind == DDIM_PV_BOOL && !little->u.b)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "legacy torch file: saved on a big-endian machine");
      return NULL;
    }

  g_autoptr (DdimPickle) object = load_next (data, length, &pos, "data pickle", error);
  if (object == NULL)
    return NULL;
  g_autoptr (DdimPickle) keys = load_next (data, length, &pos, "storage key pickle", error);
  if (keys == NULL)
    return NULL;
  const DdimPickleValue *list = ddim_pickle_get_root (keys);
  if (list->kind != DDIM_PV_LIST)
    return fail (error, "storage keys are a %s, not a list", ddim_pickle_value_kind_name (list)),
           NULL;
  g_autoptr (GHashTable) types = storage_types (object, error);
  if (types == NULL)
    return NULL;

  g_autoptr (GHashTable) table = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  for (guint i = 0; i < list->u.seq.n; i++)
    {
      const DdimPickleValue *key = list->u.seq.items[i];
      if (key->kind != DDIM_PV_STR)
        return fail (error, "storage key %u is a %s, not a str", i,
                     ddim_pickle_value_kind_name (key)), NULL;
      const DdimPickleValue *st = g_hash_table_lookup (types, key->u.str.s);
      if (st == NULL)
        return fail (error, "storage '%s' is listed but no tensor uses it", key->u.str.s), NULL;
      if (g_hash_table_contains (table, key->u.str.s))
        return fail (error, "storage '%s' is listed twice", key->u.str.s), NULL;
      if (length - pos < 8)
        return fail (error, "file ends before storage '%s' (truncated?)", key->u.str.s), NULL;
      guint64 numel = 0;
      for (guint b = 0; b < 8; b++)
        numel |= (guint64) data[pos + b] << (8 * b);
      pos += 8;
      guint64 n_bytes;
      if (numel != (guint64) st->u.storage.numel
          || !g_uint64_checked_mul (&n_bytes, numel, ddim_dtype_size (st->u.storage.dtype)))
        return fail (error, "storage '%s' holds %" G_GUINT64_FORMAT " elements, its tensors say %"
                     G_GINT64_FORMAT, key->u.str.s, numel, st->u.storage.numel), NULL;
      if (length - pos < n_bytes)
        return fail (error, "storage '%s' (%" G_GUINT64_FORMAT " bytes at byte %" G_GSIZE_FORMAT
                     ") runs past the end of the file (truncated?)", key->u.str.s, n_bytes, pos),
               NULL;
      DdimTorchRecord *rec = g_new (DdimTorchRecord, 1);
      rec->data = data + pos;
      rec->n_bytes = n_bytes;
      g_hash_table_insert (table, g_strdup (key->u.str.s), rec);
      pos += (gsize) n_bytes;
    }
  *records = g_steal_pointer (&table);
  return g_steal_pointer (&object);
}
