/* torch.save reader: format detection, the zip container, unwrapping the
 * saved object to one state dict, and turning tensor views into
 * DdimTensorInfo entries (see ddim/torch-file.h).
 *
 * Error codes: DDIM_ERROR_IO (cannot map the file), DDIM_ERROR_FORMAT
 * (malformed, truncated, hostile), DDIM_ERROR_UNSUPPORTED (TorchScript,
 * compressed zip entries, big-endian files, globals and opcodes state dicts
 * do not use). Messages start with the file's basename when opened from a
 * path. */

#include "ddim/torch-file.h"
#include "ddim/error.h"
#include "io/torch-legacy.h"
#include "io/torch-pickle.h"
#include "io/torch-zip.h"

#include <string.h>

#define MODULE_PREFIX "module."
#define UNWRAP_LIMIT 4    /* nested containers looked into */

struct _DdimTorchFile {
  GBytes          *bytes;
  DdimTorchFormat  format;
  GArray          *infos;     /* DdimTensorInfo */
  GHashTable      *by_name;   /* name (borrowed) -> GUINT_TO_POINTER (index + 1) */
  GStringChunk    *names;
  GPtrArray       *buffers;   /* gathered or converted tensor data */
  guint64          owned_bytes;
};

/* Where storage records are: zip entries or the legacy table. */
typedef struct {
  const guint8 *file;
  DdimZip      *zip;
  char         *zip_dir;      /* "archive/" or "" */
  GHashTable   *legacy;       /* key -> DdimTorchRecord */
} Records;

void
ddim_torch_file_free (DdimTorchFile *file)
{
  if (file == NULL)
    return;
  g_bytes_unref (file->bytes);
  g_array_unref (file->infos);
  g_hash_table_unref (file->by_name);
  g_string_chunk_free (file->names);
  g_ptr_array_unref (file->buffers);
  g_free (file);
}

static gboolean
has_prefix_bytes (const guint8 *data, gsize length, const char *prefix, gsize prefix_len)
{
  return length >= prefix_len && memcmp (data, prefix, prefix_len) == 0;
}

gboolean
ddim_torch_file_sniff (const guint8 *data, gsize length)
{
  g_return_val_if_fail (data != NULL || length == 0, FALSE);
  return has_prefix_bytes (data, length, "PK\x03\x04", 4)
    || has_prefix_bytes (data, length, DDIM_TORCH_LEGACY_MAGIC, DDIM_TORCH_LEGACY_MAGIC_LEN);
}

/* ------------------------------------------------------------ records */

static gboolean
resolve_storage (const Records *rec, const DdimPickleStorage *st, const guint8 **out,
                 GError **error)
{
  guint64 want = (guint64) st->numel * ddim_dtype_size (st->dtype);   /* numel <= 2^59 */
  guint64 have;
  const guint8 *data;
  if (rec->zip != NULL)
    {
      g_autofree char *name = g_strconcat (rec->zip_dir, "data/", st->key, NULL);
      const DdimZipEntry *e = ddim_zip_lookup (rec->zip, name);
      if (e == NULL)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "storage record '%s' is missing from the archive", name);
          return FALSE;
        }
      data = rec->file + e->offset;
      have = e->size;
    }
  else
    {
      const DdimTorchRecord *r = g_hash_table_lookup (rec->legacy, st->key);
      if (r == NULL)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "storage '%s' is not in the file's list of storages", st->key);
          return FALSE;
        }
      data = r->data;
      have = r->n_bytes;
    }
  if (have != want)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "storage '%s' has %" G_GUINT64_FORMAT " bytes, its %" G_GINT64_FORMAT
                   " elements of %s need %" G_GUINT64_FORMAT, st->key, have, st->numel,
                   ddim_dtype_name (st->dtype), want);
      return FALSE;
    }
  *out = data;
  return TRUE;
}

/* ------------------------------------------------------------ tensors */

static gboolean
is_contiguous (const DdimPickleTensor *t)
{
  gint64 expected = 1;
  for (int d = t->ndim - 1; d >= 0; d--)
    {
      if (t->size[d] != 1 && t->stride[d] != expected)
        return FALSE;
      expected *= t->size[d];
    }
  return TRUE;
}

/* Copies the view's elements in row-major order (converting F64 to F32)
 * without recursion: an odometer over the indices. */
static void
gather (const DdimPickleTensor *t, const guint8 *start, guint8 *dst)
{
  gsize elsize = ddim_dtype_size (t->dtype);
  gint64 index[DDIM_MAX_DIMS] = { 0 };
  for (gint64 n = 0; n < t->numel; n++)
    {
      gint64 at = 0;
      for (int d = 0; d < t->ndim; d++)
        at += index[d] * t->stride[d];
      const guint8 *src = start + (gsize) at * elsize;
      if (t->dtype == DDIM_DTYPE_F64)
        {
          guint64 bits;
          double x;
          memcpy (&bits, src, 8);
          bits = GUINT64_FROM_LE (bits);
          memcpy (&x, &bits, 8);
          float f = (float) x;
          memcpy (dst + (gsize) n * 4, &f, 4);
        }
      else
        memcpy (dst + (gsize) n * elsize, src, elsize);
      for (int d = t->ndim - 1; d >= 0; d--)
        {
          if (++index[d] < t->size[d])
            break;
          index[d] = 0;
        }
    }
}

static gboolean
add_tensor (DdimTorchFile *file, const Records *rec, const char *name,
            const DdimPickleTensor *t, GError **error)
{
  if (t->dtype != DDIM_DTYPE_F32 && t->dtype != DDIM_DTYPE_F16 && t->dtype != DDIM_DTYPE_BF16
      && t->dtype != DDIM_DTYPE_F64)
    return TRUE;   /* integer and bool buffers are not weights */
  if (g_str_has_prefix (name, MODULE_PREFIX))
    name += strlen (MODULE_PREFIX);
  if (g_hash_table_contains (file->by_name, name))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "tensor '%s' appears twice", name);
      return FALSE;
    }
  const DdimPickleStorage *st = &t->storage->u.storage;
  const guint8 *base;
  if (!resolve_storage (rec, st, &base, error))
    {
      g_prefix_error (error, "tensor '%s': ", name);
      return FALSE;
    }
  gsize elsize = ddim_dtype_size (t->dtype);
  /* Bounds were checked against the storage (view) when the pickle built
   * the tensor, and the record size matches the storage just above. */
  const guint8 *start = base + (gsize) st->view_offset * ddim_dtype_size (st->dtype)
                        + (gsize) t->offset * elsize;
  DdimTensorInfo info = {
    .dtype = t->dtype, .ndim = t->ndim, .n_elements = t->numel,
  };
  memcpy (info.shape, t->size, sizeof info.shape);
  if (t->numel == 0)
    {
      info.data = base;
      info.dtype = t->dtype == DDIM_DTYPE_F64 ? DDIM_DTYPE_F32 : t->dtype;
    }
  else if (t->dtype != DDIM_DTYPE_F64 && is_contiguous (t))
    {
      info.data = start;   /* inside the mapping, no copy */
      info.n_bytes = (gsize) t->numel * elsize;
    }
  else
    {
      gsize out_size = t->dtype == DDIM_DTYPE_F64 ? 4 : elsize;
      guint64 view_bytes = (guint64) st->view_numel * ddim_dtype_size (st->dtype);
      guint64 n_bytes = (guint64) t->numel * out_size;
      /* Stride-0 or overlapping views could expand a small storage into an
       * arbitrarily large copy; legitimate files never need more copied
       * bytes than they hold. */
      if ((guint64) t->numel * elsize > view_bytes
          || n_bytes > g_bytes_get_size (file->bytes) - file->owned_bytes)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "tensor '%s': overlapping view of %" G_GINT64_FORMAT " elements "
                       "would need more memory than the file holds", name, t->numel);
          return FALSE;
        }
      guint8 *dst = g_malloc (n_bytes);
      gather (t, start, dst);
      g_ptr_array_add (file->buffers, dst);
      file->owned_bytes += n_bytes;
      info.data = dst;
      info.n_bytes = n_bytes;
      info.dtype = t->dtype == DDIM_DTYPE_F64 ? DDIM_DTYPE_F32 : t->dtype;
    }
  info.name = g_string_chunk_insert (file->names, name);
  g_array_append_val (file->infos, info);
  g_hash_table_insert (file->by_name, (gpointer) info.name, GUINT_TO_POINTER (file->infos->len));
  return TRUE;
}

/* ----------------------------------------------------------- unwrapping */

static gboolean
has_tensor_values (const DdimPickleValue *dict)
{
  for (guint i = 1; i < dict->u.seq.n; i += 2)
    if (dict->u.seq.items[i]->kind == DDIM_PV_TENSOR)
      return TRUE;
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

/* Finds the state dict: a dict with tensor values, possibly inside
 * ermongroup's training list or under "ema"/"state_dict"/"model". Looks at
 * most UNWRAP_LIMIT levels deep (cycles in the pickle cannot loop). */
static const DdimPickleValue *
select_state_dict (const DdimPickleValue *obj, DdimTorchSelect select, GError **error)
{
  static const char *const ema_keys[] = { "ema", "state_dict", "model" };
  static const char *const model_keys[] = { "state_dict", "model", "ema" };
  const char *const *keys = select == DDIM_TORCH_SELECT_EMA ? ema_keys : model_keys;
  for (int level = 0; level < UNWRAP_LIMIT; level++)
    {
      const DdimPickleValue *next = NULL;
      if (obj->kind == DDIM_PV_DICT)
        {
          if (has_tensor_values (obj))
            return obj;
          for (int k = 0; k < 3 && next == NULL; k++)
            {
              const DdimPickleValue *v = dict_get (obj, keys[k]);
              if (v != NULL && (v->kind == DDIM_PV_DICT || v->kind == DDIM_PV_LIST
                                || v->kind == DDIM_PV_TUPLE))
                next = v;
            }
        }
      else if ((obj->kind == DDIM_PV_LIST || obj->kind == DDIM_PV_TUPLE) && obj->u.seq.n > 0)
        {
          /* ermongroup: [model, optimizer, epoch, step(, ema)]: the EMA is
           * the last element when the run kept one. */
          const DdimPickleValue *last = obj->u.seq.items[obj->u.seq.n - 1];
          if (select == DDIM_TORCH_SELECT_EMA && last->kind == DDIM_PV_DICT
              && has_tensor_values (last))
            next = last;
          else
            next = obj->u.seq.items[0];
        }
      if (next == NULL)
        break;
      obj = next;
    }
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
               "no state dict found: the file holds a %s without tensors (looked into lists "
               "and under 'ema', 'state_dict', 'model')", ddim_pickle_value_kind_name (obj));
  return NULL;
}

static gboolean
collect_tensors (DdimTorchFile *file, const Records *rec, const DdimPickleValue *root,
                 DdimTorchSelect select, GError **error)
{
  const DdimPickleValue *dict = select_state_dict (root, select, error);
  if (dict == NULL)
    return FALSE;
  for (guint i = 0; i + 1 < dict->u.seq.n; i += 2)
    {
      const DdimPickleValue *key = dict->u.seq.items[i], *value = dict->u.seq.items[i + 1];
      if (key->kind != DDIM_PV_STR || value->kind != DDIM_PV_TENSOR)
        continue;
      if (!add_tensor (file, rec, key->u.str.s, &value->u.tensor, error))
        return FALSE;
    }
  if (file->infos->len == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "the state dict holds no floating-point tensors");
      return FALSE;
    }
  return TRUE;
}

/* ------------------------------------------------------------ formats */

static DdimPickle *
open_zip (const guint8 *data, gsize length, Records *rec, GError **error)
{
  rec->zip = ddim_zip_open (data, length, error);
  if (rec->zip == NULL)
    return NULL;
  const DdimZipEntry *pkl = NULL;
  for (guint i = 0; i < ddim_zip_get_n_entries (rec->zip) && pkl == NULL; i++)
    {
      const DdimZipEntry *e = ddim_zip_get_entry (rec->zip, i);
      if (strcmp (e->name, "data.pkl") == 0 || g_str_has_suffix (e->name, "/data.pkl"))
        pkl = e;
    }
  if (pkl == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "zip archive without a data.pkl record: not a torch.save file");
      return NULL;
    }
  rec->zip_dir = g_strndup (pkl->name, strlen (pkl->name) - strlen ("data.pkl"));
  g_autofree char *constants = g_strconcat (rec->zip_dir, "constants.pkl", NULL);
  if (ddim_zip_lookup (rec->zip, constants) != NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "a TorchScript archive (torch.jit.save), not a torch.save state dict");
      return NULL;
    }
  g_autofree char *byteorder = g_strconcat (rec->zip_dir, "byteorder", NULL);
  const DdimZipEntry *bo = ddim_zip_lookup (rec->zip, byteorder);
  if (bo != NULL && !(bo->size == 6 && memcmp (data + bo->offset, "little", 6) == 0))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "the archive's byteorder record is not 'little'");
      return NULL;
    }
  return ddim_pickle_load (data + pkl->offset, (gsize) pkl->size, DDIM_PICKLE_ZIP, "data.pkl",
                           NULL, error);
}

static DdimTorchFile *
torch_file_new (GBytes *bytes, const char *display_name, DdimTorchSelect select, GError **error)
{
  gsize length;
  const guint8 *data = g_bytes_get_data (bytes, &length);
  Records rec = { .file = data };
  g_autoptr (DdimPickle) pickle = NULL;
  g_autoptr (DdimTorchFile) file = g_new0 (DdimTorchFile, 1);
  file->bytes = g_bytes_ref (bytes);
  file->infos = g_array_new (FALSE, FALSE, sizeof (DdimTensorInfo));
  file->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  file->names = g_string_chunk_new (4096);
  file->buffers = g_ptr_array_new_with_free_func (g_free);

  gboolean ok = FALSE;
  if (has_prefix_bytes (data, length, "PK\x03\x04", 4))
    {
      file->format = DDIM_TORCH_FORMAT_ZIP;
      pickle = open_zip (data, length, &rec, error);
    }
  else if (has_prefix_bytes (data, length, DDIM_TORCH_LEGACY_MAGIC, DDIM_TORCH_LEGACY_MAGIC_LEN))
    {
      file->format = DDIM_TORCH_FORMAT_LEGACY;
      pickle = ddim_torch_legacy_read (data, length, &rec.legacy, error);
    }
  else
    g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                 "not a torch.save file (neither a zip archive nor the legacy pickle format)");
  if (pickle != NULL)
    ok = collect_tensors (file, &rec, ddim_pickle_get_root (pickle), select, error);

  ddim_zip_free (rec.zip);
  g_free (rec.zip_dir);
  if (rec.legacy != NULL)
    g_hash_table_unref (rec.legacy);
  if (!ok)
    {
      if (display_name != NULL)
        g_prefix_error (error, "%s: ", display_name);
      return NULL;
    }
  return g_steal_pointer (&file);
}

DdimTorchFile *
ddim_torch_file_new_from_bytes (GBytes *bytes, DdimTorchSelect select, GError **error)
{
  g_return_val_if_fail (bytes != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  return torch_file_new (bytes, NULL, select, error);
}

DdimTorchFile *
ddim_torch_file_open (const char *path, DdimTorchSelect select, GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  g_autoptr (GError) local = NULL;
  g_autoptr (GMappedFile) mf = g_mapped_file_new (path, FALSE, &local);
  if (mf == NULL)
    {
      g_autofree char *display = g_filename_display_name (path);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "could not open '%s': %s", display,
                   local->message);
      return NULL;
    }
  g_autoptr (GBytes) bytes = g_mapped_file_get_bytes (mf);
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *display = g_filename_display_name (base);
  return torch_file_new (bytes, display, select, error);
}

DdimTorchFormat
ddim_torch_file_get_format (DdimTorchFile *file)
{
  g_return_val_if_fail (file != NULL, DDIM_TORCH_FORMAT_ZIP);
  return file->format;
}

guint
ddim_torch_file_get_n_tensors (DdimTorchFile *file)
{
  g_return_val_if_fail (file != NULL, 0);
  return file->infos->len;
}

const DdimTensorInfo *
ddim_torch_file_get_info_nth (DdimTorchFile *file, guint index)
{
  g_return_val_if_fail (file != NULL && index < file->infos->len, NULL);
  return &g_array_index (file->infos, DdimTensorInfo, index);
}

const DdimTensorInfo *
ddim_torch_file_lookup (DdimTorchFile *file, const char *name)
{
  g_return_val_if_fail (file != NULL && name != NULL, NULL);
  guint index = GPOINTER_TO_UINT (g_hash_table_lookup (file->by_name, name));
  return index == 0 ? NULL : &g_array_index (file->infos, DdimTensorInfo, index - 1);
}
