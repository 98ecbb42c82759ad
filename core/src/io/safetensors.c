/* safetensors reader and writer.
 *
 * Error codes, as promised by ddim/safetensors.h:
 *  - DDIM_ERROR_IO: the file cannot be opened, mapped or written.
 *  - DDIM_ERROR_FORMAT: anything wrong with the file itself: too short,
 *    header length over the limit or past the end, header not UTF-8, not
 *    JSON or not an object, an entry without "dtype", "shape" or
 *    "data_offsets", a dtype name this library does not know (including valid
 *    safetensors dtypes such as F8_E4M3, since the header lists known dtypes
 *    among the validated properties), negative or overflowing shapes, byte
 *    ranges that do not match dtype x shape, overlaps, holes, and tensor data
 *    that does not end exactly at the end of the file.
 *  - DDIM_ERROR_UNSUPPORTED: a tensor with more than DDIM_MAX_DIMS
 *    dimensions, or a (known) dtype that cannot be converted to float32
 *    (I16, I8, U8, BOOL) in ddim_safetensors_read_f32 /
 *    ddim_tensor_info_to_f32.
 *  - DDIM_ERROR_MISMATCH: a missing tensor, or a shape that differs from the
 *    expected one.
 *
 * Messages start with the file's basename ("weights.safetensors: ...") when
 * the object was opened from a path. */

#include "ddim/safetensors.h"
#include "ddim/error.h"

#include <json-glib/json-glib.h>
#include <string.h>

#define HEADER_LIMIT G_GUINT64_CONSTANT (100000000)
#define METADATA_KEY "__metadata__"

struct _DdimSafetensors {
  GBytes         *bytes;
  char           *display_name; /* basename for messages, or NULL */
  DdimTensorInfo *infos;
  guint           n_tensors;
  GHashTable     *by_name;      /* name (borrowed) -> GUINT_TO_POINTER (index + 1) */
  GHashTable     *metadata;     /* owned key -> owned value */
  GStringChunk   *strings;      /* tensor names */
};

/* ---------------------------------------------------------------- dtypes */

static const struct {
  const char *name;
  DdimDtype   dtype;
  gsize       size;
} dtype_table[] = {
  { "F32", DDIM_DTYPE_F32, 4 },
  { "F16", DDIM_DTYPE_F16, 2 },
  { "BF16", DDIM_DTYPE_BF16, 2 },
  { "F64", DDIM_DTYPE_F64, 8 },
  { "I64", DDIM_DTYPE_I64, 8 },
  { "I32", DDIM_DTYPE_I32, 4 },
  { "I16", DDIM_DTYPE_I16, 2 },
  { "I8", DDIM_DTYPE_I8, 1 },
  { "U8", DDIM_DTYPE_U8, 1 },
  { "BOOL", DDIM_DTYPE_BOOL, 1 },
};

const char *
ddim_dtype_name (DdimDtype dtype)
{
  for (gsize i = 0; i < G_N_ELEMENTS (dtype_table); i++)
    if (dtype_table[i].dtype == dtype)
      return dtype_table[i].name;
  g_return_val_if_reached ("?");
}

gsize
ddim_dtype_size (DdimDtype dtype)
{
  for (gsize i = 0; i < G_N_ELEMENTS (dtype_table); i++)
    if (dtype_table[i].dtype == dtype)
      return dtype_table[i].size;
  g_return_val_if_reached (0);
}

static gboolean
dtype_from_name (const char *name, DdimDtype *out)
{
  for (gsize i = 0; i < G_N_ELEMENTS (dtype_table); i++)
    if (strcmp (dtype_table[i].name, name) == 0)
      {
        *out = dtype_table[i].dtype;
        return TRUE;
      }
  return FALSE;
}

/* ------------------------------------------------- half-precision floats */

static inline float
f32_from_bits (guint32 bits)
{
  float f;
  memcpy (&f, &bits, sizeof f);
  return f;
}

static inline guint32
f32_to_bits (float f)
{
  guint32 bits;
  memcpy (&bits, &f, sizeof bits);
  return bits;
}

float
ddim_f16_to_f32 (guint16 h)
{
  guint32 sign = ((guint32) h & 0x8000u) << 16;
  guint32 exp = (h >> 10) & 0x1fu;
  guint32 mant = h & 0x3ffu;

  if (exp == 0)
    {
      if (mant == 0)
        return f32_from_bits (sign);
      /* Subnormal: normalise; every half subnormal is a normal float. */
      guint32 e = 127 - 15 + 1;
      while ((mant & 0x400u) == 0)
        {
          mant <<= 1;
          e--;
        }
      mant &= 0x3ffu;
      return f32_from_bits (sign | (e << 23) | (mant << 13));
    }
  if (exp == 0x1f) /* inf, or NaN with its payload kept */
    return f32_from_bits (sign | 0x7f800000u | (mant << 13));
  return f32_from_bits (sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

guint16
ddim_f32_to_f16 (float f)
{
  guint32 x = f32_to_bits (f);
  guint16 sign = (guint16) ((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;

  if (x >= 0x7f800000u)
    {
      if (x == 0x7f800000u)
        return sign | 0x7c00u;
      /* NaN: keep the top payload bits and make sure it stays a (quiet) NaN. */
      return sign | 0x7c00u | 0x200u | (guint16) ((x >> 13) & 0x3ffu);
    }
  if (x >= 0x477ff000u) /* >= 65520 rounds to infinity */
    return sign | 0x7c00u;
  if (x < 0x38800000u) /* below 2^-14: half subnormal or zero */
    {
      if (x <= 0x33000000u) /* <= 2^-25: the tie at 2^-25 goes to even 0 */
        return sign;
      guint32 e = x >> 23;                    /* 102 .. 112 */
      guint32 m = (x & 0x7fffffu) | 0x800000u;
      guint32 shift = 126 - e;                /* 14 .. 24 */
      guint32 q = m >> shift;
      guint32 rem = m & ((1u << shift) - 1);
      guint32 half = 1u << (shift - 1);
      if (rem > half || (rem == half && (q & 1u)))
        q++;
      return sign | (guint16) q;
    }
  guint32 h = (((x >> 23) - (127 - 15)) << 10) | ((x & 0x7fffffu) >> 13);
  guint32 rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
    h++; /* may carry into the exponent, which is correct */
  return sign | (guint16) h;
}

float
ddim_bf16_to_f32 (guint16 h)
{
  return f32_from_bits ((guint32) h << 16);
}

/* ------------------------------------------------------------- errors */

static void set_error (GError **error, const char *file, gint code,
                       const char *format, ...) G_GNUC_PRINTF (4, 5);

static void
set_error (GError **error, const char *file, gint code, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  g_autofree char *msg = g_strdup_vprintf (format, args);
  va_end (args);
  if (file != NULL)
    g_set_error (error, DDIM_ERROR, code, "%s: %s", file, msg);
  else
    g_set_error_literal (error, DDIM_ERROR, code, msg);
}

static char *
format_shape (int ndim, const gint64 *shape)
{
  GString *s = g_string_new ("[");
  for (int i = 0; i < ndim; i++)
    g_string_append_printf (s, "%s%" G_GINT64_FORMAT, i ? ", " : "", shape[i]);
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

/* ------------------------------------------------------------- reader */

void
ddim_safetensors_free (DdimSafetensors *st)
{
  if (st == NULL)
    return;
  g_clear_pointer (&st->bytes, g_bytes_unref);
  g_clear_pointer (&st->display_name, g_free);
  g_clear_pointer (&st->infos, g_free);
  g_clear_pointer (&st->by_name, g_hash_table_unref);
  g_clear_pointer (&st->metadata, g_hash_table_unref);
  g_clear_pointer (&st->strings, g_string_chunk_free);
  g_free (st);
}

/* Reads a JSON integer; FALSE if @node is not one. */
static gboolean
node_get_int (JsonNode *node, gint64 *out)
{
  if (node == NULL || !JSON_NODE_HOLDS_VALUE (node) ||
      json_node_get_value_type (node) != G_TYPE_INT64)
    return FALSE;
  *out = json_node_get_int (node);
  return TRUE;
}

typedef struct {
  DdimTensorInfo info;
  guint64        begin;
  guint64        end;
} Entry;

static int
compare_entries (gconstpointer pa, gconstpointer pb)
{
  const Entry *a = pa, *b = pb;
  if (a->begin != b->begin)
    return a->begin < b->begin ? -1 : 1;
  if (a->end != b->end)
    return a->end < b->end ? -1 : 1;
  return 0;
}

static gboolean
parse_metadata (DdimSafetensors *st, JsonNode *node, GError **error)
{
  const char *file = st->display_name;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "\"" METADATA_KEY "\" in the header is not an object of strings");
      return FALSE;
    }
  JsonObject *obj = json_node_get_object (node);
  JsonObjectIter iter;
  const char *key;
  JsonNode *value;
  json_object_iter_init (&iter, obj);
  while (json_object_iter_next (&iter, &key, &value))
    {
      if (!JSON_NODE_HOLDS_VALUE (value) ||
          json_node_get_value_type (value) != G_TYPE_STRING)
        {
          set_error (error, file, DDIM_ERROR_FORMAT,
                     "\"" METADATA_KEY "\" value for key '%s' is not a string", key);
          return FALSE;
        }
      g_hash_table_replace (st->metadata, g_strdup (key),
                            g_strdup (json_node_get_string (value)));
    }
  return TRUE;
}

static gboolean
parse_entry (DdimSafetensors *st, const char *name, JsonNode *node,
             const guint8 *data, Entry *e, GError **error)
{
  const char *file = st->display_name;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "header entry for tensor '%s' is not an object", name);
      return FALSE;
    }
  JsonObject *obj = json_node_get_object (node);

  /* dtype */
  JsonNode *dtype_node = json_object_get_member (obj, "dtype");
  if (dtype_node == NULL)
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "tensor '%s' has no \"dtype\" in the header", name);
      return FALSE;
    }
  if (!JSON_NODE_HOLDS_VALUE (dtype_node) ||
      json_node_get_value_type (dtype_node) != G_TYPE_STRING)
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "\"dtype\" of tensor '%s' is not a string", name);
      return FALSE;
    }
  const char *dtype_name = json_node_get_string (dtype_node);
  if (!dtype_from_name (dtype_name, &e->info.dtype))
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "unknown dtype '%s' for tensor '%s' (supported: F32, F16, BF16, "
                 "F64, I64, I32, I16, I8, U8, BOOL)", dtype_name, name);
      return FALSE;
    }

  /* shape */
  JsonNode *shape_node = json_object_get_member (obj, "shape");
  if (shape_node == NULL)
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "tensor '%s' has no \"shape\" in the header", name);
      return FALSE;
    }
  if (!JSON_NODE_HOLDS_ARRAY (shape_node))
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "\"shape\" of tensor '%s' is not an array", name);
      return FALSE;
    }
  JsonArray *shape = json_node_get_array (shape_node);
  guint ndim = json_array_get_length (shape);
  if (ndim > DDIM_MAX_DIMS)
    {
      set_error (error, file, DDIM_ERROR_UNSUPPORTED,
                 "tensor '%s' has %u dimensions, at most %d are supported",
                 name, ndim, DDIM_MAX_DIMS);
      return FALSE;
    }
  e->info.ndim = (int) ndim;
  guint64 n_elements = 1;
  gboolean overflow = FALSE;
  for (guint i = 0; i < ndim; i++)
    {
      gint64 dim;
      if (!node_get_int (json_array_get_element (shape, i), &dim))
        {
          set_error (error, file, DDIM_ERROR_FORMAT,
                     "\"shape\" of tensor '%s' has a dimension %u that is not an integer",
                     name, i);
          return FALSE;
        }
      if (dim < 0)
        {
          set_error (error, file, DDIM_ERROR_FORMAT,
                     "tensor '%s' has negative dimension %" G_GINT64_FORMAT
                     " in its shape", name, dim);
          return FALSE;
        }
      e->info.shape[i] = dim;
      if (!overflow && !g_uint64_checked_mul (&n_elements, n_elements, (guint64) dim))
        overflow = TRUE;
    }
  gsize dsize = ddim_dtype_size (e->info.dtype);
  guint64 n_bytes = 0;
  if (overflow || n_elements > (guint64) G_MAXINT64 ||
      !g_uint64_checked_mul (&n_bytes, n_elements, dsize))
    {
      g_autofree char *s = format_shape (e->info.ndim, e->info.shape);
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "tensor '%s' has shape %s whose size overflows", name, s);
      return FALSE;
    }
  e->info.n_elements = (gint64) n_elements;

  /* data_offsets */
  JsonNode *off_node = json_object_get_member (obj, "data_offsets");
  if (off_node == NULL)
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "tensor '%s' has no \"data_offsets\" in the header", name);
      return FALSE;
    }
  JsonArray *offsets = JSON_NODE_HOLDS_ARRAY (off_node) ? json_node_get_array (off_node) : NULL;
  gint64 begin, end;
  if (offsets == NULL || json_array_get_length (offsets) != 2 ||
      !node_get_int (json_array_get_element (offsets, 0), &begin) ||
      !node_get_int (json_array_get_element (offsets, 1), &end))
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "\"data_offsets\" of tensor '%s' is not an array of two integers", name);
      return FALSE;
    }
  if (begin < 0 || end < begin)
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "tensor '%s' has invalid data_offsets [%" G_GINT64_FORMAT ", %"
                 G_GINT64_FORMAT "]", name, begin, end);
      return FALSE;
    }
  if ((guint64) (end - begin) != n_bytes)
    {
      g_autofree char *s = format_shape (e->info.ndim, e->info.shape);
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "tensor '%s' has dtype %s and shape %s (%" G_GUINT64_FORMAT
                 " bytes) but data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                 "] span %" G_GINT64_FORMAT " bytes",
                 name, dtype_name, s, n_bytes, begin, end, end - begin);
      return FALSE;
    }
  e->begin = (guint64) begin;
  e->end = (guint64) end;
  e->info.n_bytes = (gsize) n_bytes;
  e->info.data = data; /* rebased once the range is validated */
  e->info.name = g_string_chunk_insert (st->strings, name);
  return TRUE;
}

static DdimSafetensors *
safetensors_new (GBytes *bytes, const char *display_name, GError **error)
{
  g_autoptr (DdimSafetensors) st = g_new0 (DdimSafetensors, 1);
  st->bytes = g_bytes_ref (bytes);
  st->display_name = g_strdup (display_name);
  st->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  st->strings = g_string_chunk_new (1024);
  const char *file = st->display_name;

  gsize size;
  const guint8 *base = g_bytes_get_data (bytes, &size);

  if (size < 8)
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "file is too short to be safetensors (%" G_GSIZE_FORMAT
                 " bytes, the header length alone takes 8)", size);
      return NULL;
    }
  guint64 header_len;
  memcpy (&header_len, base, 8);
  header_len = GUINT64_FROM_LE (header_len);
  if (header_len > HEADER_LIMIT)
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "header length %" G_GUINT64_FORMAT " exceeds the limit of %"
                 G_GUINT64_FORMAT " bytes (not a safetensors file?)",
                 header_len, HEADER_LIMIT);
      return NULL;
    }
  if (header_len > size - 8)
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "header length %" G_GUINT64_FORMAT " runs past the end of the file (%"
                 G_GSIZE_FORMAT " bytes)", header_len, size);
      return NULL;
    }
  const char *header = (const char *) base + 8;
  const guint8 *data = base + 8 + header_len;
  guint64 data_size = size - 8 - header_len;

  if (!g_utf8_validate (header, (gssize) header_len, NULL))
    {
      set_error (error, file, DDIM_ERROR_FORMAT, "header is not valid UTF-8");
      return NULL;
    }

  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) json_error = NULL;
  if (!json_parser_load_from_data (parser, header, (gssize) header_len, &json_error))
    {
      set_error (error, file, DDIM_ERROR_FORMAT, "header is not valid JSON: %s",
                 json_error->message);
      return NULL;
    }
  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      set_error (error, file, DDIM_ERROR_FORMAT, "header is not a JSON object");
      return NULL;
    }
  JsonObject *obj = json_node_get_object (root);

  guint n_members = json_object_get_size (obj);
  g_autofree Entry *entries = g_new0 (Entry, MAX (n_members, 1));
  guint n = 0;
  JsonObjectIter iter;
  const char *name;
  JsonNode *node;
  json_object_iter_init (&iter, obj);
  while (json_object_iter_next (&iter, &name, &node))
    {
      if (strcmp (name, METADATA_KEY) == 0)
        {
          if (!parse_metadata (st, node, error))
            return NULL;
          continue;
        }
      if (!parse_entry (st, name, node, data, &entries[n], error))
        return NULL;
      n++;
    }

  qsort (entries, n, sizeof (Entry), compare_entries);

  guint64 pos = 0;
  for (guint i = 0; i < n; i++)
    {
      Entry *e = &entries[i];
      if (e->begin < pos)
        {
          set_error (error, file, DDIM_ERROR_FORMAT,
                     "tensors '%s' and '%s' overlap or are out of order ('%s' ends at "
                     "byte %" G_GUINT64_FORMAT ", '%s' begins at byte %"
                     G_GUINT64_FORMAT ")",
                     entries[i - 1].info.name, e->info.name, entries[i - 1].info.name,
                     pos, e->info.name, e->begin);
          return NULL;
        }
      if (e->begin > pos)
        {
          if (i == 0)
            set_error (error, file, DDIM_ERROR_FORMAT,
                       "hole in the tensor data: the first tensor '%s' begins at byte %"
                       G_GUINT64_FORMAT " instead of 0", e->info.name, e->begin);
          else
            set_error (error, file, DDIM_ERROR_FORMAT,
                       "hole in the tensor data between tensors '%s' (ends at byte %"
                       G_GUINT64_FORMAT ") and '%s' (begins at byte %"
                       G_GUINT64_FORMAT ")", entries[i - 1].info.name, pos,
                       e->info.name, e->begin);
          return NULL;
        }
      if (e->end > data_size)
        {
          set_error (error, file, DDIM_ERROR_FORMAT,
                     "tensor '%s' ends at byte %" G_GUINT64_FORMAT ", file data has %"
                     G_GUINT64_FORMAT " (file truncated?)",
                     e->info.name, e->end, data_size);
          return NULL;
        }
      pos = e->end;
      e->info.data = data + e->begin;
    }
  if (pos != data_size)
    {
      set_error (error, file, DDIM_ERROR_FORMAT,
                 "file has %" G_GUINT64_FORMAT " bytes of tensor data but the tensors "
                 "end at byte %" G_GUINT64_FORMAT " (trailing bytes after the last tensor)",
                 data_size, pos);
      return NULL;
    }

  st->n_tensors = n;
  st->infos = g_new0 (DdimTensorInfo, MAX (n, 1));
  for (guint i = 0; i < n; i++)
    {
      st->infos[i] = entries[i].info;
      g_hash_table_insert (st->by_name, (gpointer) st->infos[i].name,
                           GUINT_TO_POINTER (i + 1));
    }
  return g_steal_pointer (&st);
}

DdimSafetensors *
ddim_safetensors_new_from_bytes (GBytes *bytes, GError **error)
{
  g_return_val_if_fail (bytes != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  return safetensors_new (bytes, NULL, error);
}

DdimSafetensors *
ddim_safetensors_open (const char *path, GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  g_autoptr (GError) local = NULL;
  g_autoptr (GMappedFile) mf = g_mapped_file_new (path, FALSE, &local);
  if (mf == NULL)
    {
      g_autofree char *display = g_filename_display_name (path);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "could not open '%s': %s",
                   display, local->message);
      return NULL;
    }
  g_autoptr (GBytes) bytes = g_mapped_file_get_bytes (mf);
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *display = g_filename_display_name (base);
  return safetensors_new (bytes, display, error);
}

guint
ddim_safetensors_get_n_tensors (DdimSafetensors *st)
{
  g_return_val_if_fail (st != NULL, 0);
  return st->n_tensors;
}

const DdimTensorInfo *
ddim_safetensors_get_info_nth (DdimSafetensors *st, guint index)
{
  g_return_val_if_fail (st != NULL, NULL);
  g_return_val_if_fail (index < st->n_tensors, NULL);
  return &st->infos[index];
}

const DdimTensorInfo *
ddim_safetensors_lookup (DdimSafetensors *st, const char *name)
{
  g_return_val_if_fail (st != NULL, NULL);
  g_return_val_if_fail (name != NULL, NULL);
  guint idx = GPOINTER_TO_UINT (g_hash_table_lookup (st->by_name, name));
  return idx ? &st->infos[idx - 1] : NULL;
}

const char *
ddim_safetensors_get_metadata (DdimSafetensors *st, const char *key)
{
  g_return_val_if_fail (st != NULL, NULL);
  g_return_val_if_fail (key != NULL, NULL);
  return g_hash_table_lookup (st->metadata, key);
}

GBytes *
ddim_safetensors_get_bytes (DdimSafetensors *st)
{
  g_return_val_if_fail (st != NULL, NULL);
  return st->bytes;
}

gboolean
ddim_tensor_info_to_f32 (const DdimTensorInfo *info, float *dst, GError **error)
{
  g_return_val_if_fail (info != NULL, FALSE);
  g_return_val_if_fail (dst != NULL || info->n_elements == 0, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  const guint8 *src = info->data;
  gsize n = (gsize) info->n_elements;

  switch (info->dtype)
    {
    case DDIM_DTYPE_F32:
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
      if (n > 0)
        memcpy (dst, src, n * 4);
#else
      for (gsize i = 0; i < n; i++)
        {
          guint32 v;
          memcpy (&v, src + 4 * i, 4);
          dst[i] = f32_from_bits (GUINT32_FROM_LE (v));
        }
#endif
      return TRUE;
    case DDIM_DTYPE_F16:
      for (gsize i = 0; i < n; i++)
        {
          guint16 v;
          memcpy (&v, src + 2 * i, 2);
          dst[i] = ddim_f16_to_f32 (GUINT16_FROM_LE (v));
        }
      return TRUE;
    case DDIM_DTYPE_BF16:
      for (gsize i = 0; i < n; i++)
        {
          guint16 v;
          memcpy (&v, src + 2 * i, 2);
          dst[i] = ddim_bf16_to_f32 (GUINT16_FROM_LE (v));
        }
      return TRUE;
    case DDIM_DTYPE_F64:
      for (gsize i = 0; i < n; i++)
        {
          guint64 v;
          double d;
          memcpy (&v, src + 8 * i, 8);
          v = GUINT64_FROM_LE (v);
          memcpy (&d, &v, 8);
          dst[i] = (float) d;
        }
      return TRUE;
    case DDIM_DTYPE_I64:
      for (gsize i = 0; i < n; i++)
        {
          guint64 v;
          memcpy (&v, src + 8 * i, 8);
          dst[i] = (float) (gint64) GUINT64_FROM_LE (v);
        }
      return TRUE;
    case DDIM_DTYPE_I32:
      for (gsize i = 0; i < n; i++)
        {
          guint32 v;
          memcpy (&v, src + 4 * i, 4);
          dst[i] = (float) (gint32) GUINT32_FROM_LE (v);
        }
      return TRUE;
    case DDIM_DTYPE_I16:
    case DDIM_DTYPE_I8:
    case DDIM_DTYPE_U8:
    case DDIM_DTYPE_BOOL:
    default:
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "tensor '%s' has dtype %s, which cannot be converted to float32 "
                   "(supported: F32, F16, BF16, F64, I64, I32)",
                   info->name, ddim_dtype_name (info->dtype));
      return FALSE;
    }
}

float *
ddim_safetensors_read_f32 (DdimSafetensors *st, const char *name,
                           int expected_ndim, const gint64 *expected_shape,
                           GError **error)
{
  g_return_val_if_fail (st != NULL, NULL);
  g_return_val_if_fail (name != NULL, NULL);
  g_return_val_if_fail (expected_shape == NULL ||
                        (expected_ndim >= 0 && expected_ndim <= DDIM_MAX_DIMS), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  const DdimTensorInfo *info = ddim_safetensors_lookup (st, name);
  if (info == NULL)
    {
      set_error (error, st->display_name, DDIM_ERROR_MISMATCH,
                 "missing tensor '%s'", name);
      return NULL;
    }
  if (expected_shape != NULL)
    {
      gboolean same = info->ndim == expected_ndim;
      for (int i = 0; same && i < expected_ndim; i++)
        same = info->shape[i] == expected_shape[i];
      if (!same)
        {
          g_autofree char *got = format_shape (info->ndim, info->shape);
          g_autofree char *want = format_shape (expected_ndim, expected_shape);
          set_error (error, st->display_name, DDIM_ERROR_MISMATCH,
                     "tensor '%s' has shape %s, expected %s", name, got, want);
          return NULL;
        }
    }
  g_autofree float *out = g_new (float, MAX (info->n_elements, 1));
  if (!ddim_tensor_info_to_f32 (info, out, error))
    {
      if (st->display_name != NULL)
        g_prefix_error (error, "%s: ", st->display_name);
      return NULL;
    }
  return g_steal_pointer (&out);
}

/* ------------------------------------------------------------- writer */

typedef struct {
  char     *name;
  DdimDtype dtype;
  int       ndim;
  gint64    shape[DDIM_MAX_DIMS];
  guint8   *data;
  gsize     n_bytes;
} WriterEntry;

struct _DdimSafetensorsWriter {
  GArray     *entries;   /* WriterEntry */
  GHashTable *names;     /* borrowed names, for duplicate checks */
  GPtrArray  *meta_keys; /* owned, in order added */
  GHashTable *meta;      /* borrowed key -> owned value */
};

static void
writer_entry_clear (gpointer p)
{
  WriterEntry *e = p;
  g_free (e->name);
  g_free (e->data);
}

DdimSafetensorsWriter *
ddim_safetensors_writer_new (void)
{
  DdimSafetensorsWriter *w = g_new0 (DdimSafetensorsWriter, 1);
  w->entries = g_array_new (FALSE, TRUE, sizeof (WriterEntry));
  g_array_set_clear_func (w->entries, writer_entry_clear);
  w->names = g_hash_table_new (g_str_hash, g_str_equal);
  w->meta_keys = g_ptr_array_new_with_free_func (g_free);
  w->meta = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
  return w;
}

void
ddim_safetensors_writer_free (DdimSafetensorsWriter *w)
{
  if (w == NULL)
    return;
  g_hash_table_unref (w->names);
  g_array_unref (w->entries);
  g_hash_table_unref (w->meta);
  g_ptr_array_unref (w->meta_keys);
  g_free (w);
}

/* Adds an entry with room for the data; returns it or NULL on a programmer
 * error (which has been reported as a critical). */
static WriterEntry *
writer_add (DdimSafetensorsWriter *w, const char *name, DdimDtype dtype,
            int ndim, const gint64 *shape, gsize *n_elements)
{
  g_return_val_if_fail (w != NULL, NULL);
  g_return_val_if_fail (name != NULL, NULL);
  g_return_val_if_fail (strcmp (name, METADATA_KEY) != 0, NULL);
  g_return_val_if_fail (!g_hash_table_contains (w->names, name), NULL);
  g_return_val_if_fail (ndim >= 0 && ndim <= DDIM_MAX_DIMS, NULL);
  g_return_val_if_fail (ndim == 0 || shape != NULL, NULL);

  gsize n = 1;
  for (int i = 0; i < ndim; i++)
    {
      g_return_val_if_fail (shape[i] >= 0, NULL);
      g_return_val_if_fail (g_size_checked_mul (&n, n, (gsize) shape[i]), NULL);
    }
  gsize n_bytes;
  g_return_val_if_fail (g_size_checked_mul (&n_bytes, n, ddim_dtype_size (dtype)), NULL);

  WriterEntry e = { 0 };
  e.name = g_strdup (name);
  e.dtype = dtype;
  e.ndim = ndim;
  for (int i = 0; i < ndim; i++)
    e.shape[i] = shape[i];
  e.n_bytes = n_bytes;
  e.data = g_malloc (MAX (n_bytes, 1));
  g_array_append_val (w->entries, e);
  g_hash_table_add (w->names, e.name);
  *n_elements = n;
  return &g_array_index (w->entries, WriterEntry, w->entries->len - 1);
}

void
ddim_safetensors_writer_add_f32 (DdimSafetensorsWriter *w, const char *name,
                                 int ndim, const gint64 *shape, const float *data)
{
  gsize n;
  WriterEntry *e = writer_add (w, name, DDIM_DTYPE_F32, ndim, shape, &n);
  if (e == NULL)
    return;
  g_return_if_fail (data != NULL || n == 0);
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  if (n > 0)
    memcpy (e->data, data, n * 4);
#else
  for (gsize i = 0; i < n; i++)
    {
      guint32 v = GUINT32_TO_LE (f32_to_bits (data[i]));
      memcpy (e->data + 4 * i, &v, 4);
    }
#endif
}

void
ddim_safetensors_writer_add_f16 (DdimSafetensorsWriter *w, const char *name,
                                 int ndim, const gint64 *shape, const float *data)
{
  gsize n;
  WriterEntry *e = writer_add (w, name, DDIM_DTYPE_F16, ndim, shape, &n);
  if (e == NULL)
    return;
  g_return_if_fail (data != NULL || n == 0);
  for (gsize i = 0; i < n; i++)
    {
      guint16 v = GUINT16_TO_LE (ddim_f32_to_f16 (data[i]));
      memcpy (e->data + 2 * i, &v, 2);
    }
}

void
ddim_safetensors_writer_add_metadata (DdimSafetensorsWriter *w, const char *key,
                                      const char *value)
{
  g_return_if_fail (w != NULL);
  g_return_if_fail (key != NULL);
  g_return_if_fail (value != NULL);

  /* A repeated key keeps its place and takes the new value. */
  if (!g_hash_table_contains (w->meta, key))
    g_ptr_array_add (w->meta_keys, g_strdup (key));
  for (guint i = 0; i < w->meta_keys->len; i++)
    if (strcmp (w->meta_keys->pdata[i], key) == 0)
      {
        g_hash_table_replace (w->meta, w->meta_keys->pdata[i], g_strdup (value));
        break;
      }
}

GBytes *
ddim_safetensors_writer_to_bytes (DdimSafetensorsWriter *w)
{
  g_return_val_if_fail (w != NULL, NULL);

  g_autoptr (JsonBuilder) b = json_builder_new_immutable ();
  json_builder_begin_object (b);
  if (w->meta_keys->len > 0)
    {
      json_builder_set_member_name (b, METADATA_KEY);
      json_builder_begin_object (b);
      for (guint i = 0; i < w->meta_keys->len; i++)
        {
          const char *key = w->meta_keys->pdata[i];
          json_builder_set_member_name (b, key);
          json_builder_add_string_value (b, g_hash_table_lookup (w->meta, key));
        }
      json_builder_end_object (b);
    }
  guint64 offset = 0;
  for (guint i = 0; i < w->entries->len; i++)
    {
      const WriterEntry *e = &g_array_index (w->entries, WriterEntry, i);
      json_builder_set_member_name (b, e->name);
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "dtype");
      json_builder_add_string_value (b, ddim_dtype_name (e->dtype));
      json_builder_set_member_name (b, "shape");
      json_builder_begin_array (b);
      for (int d = 0; d < e->ndim; d++)
        json_builder_add_int_value (b, e->shape[d]);
      json_builder_end_array (b);
      json_builder_set_member_name (b, "data_offsets");
      json_builder_begin_array (b);
      json_builder_add_int_value (b, (gint64) offset);
      json_builder_add_int_value (b, (gint64) (offset + e->n_bytes));
      json_builder_end_array (b);
      json_builder_end_object (b);
      offset += e->n_bytes;
    }
  json_builder_end_object (b);

  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  json_generator_set_root (gen, root);
  gsize json_len = 0;
  g_autofree char *json = json_generator_to_data (gen, &json_len);

  gsize header_len = (json_len + 7) & ~(gsize) 7;
  gsize total = 8 + header_len + (gsize) offset;
  guint8 *out = g_malloc (total);
  guint64 le = GUINT64_TO_LE ((guint64) header_len);
  memcpy (out, &le, 8);
  memcpy (out + 8, json, json_len);
  memset (out + 8 + json_len, ' ', header_len - json_len);
  guint8 *p = out + 8 + header_len;
  for (guint i = 0; i < w->entries->len; i++)
    {
      const WriterEntry *e = &g_array_index (w->entries, WriterEntry, i);
      if (e->n_bytes > 0)
        memcpy (p, e->data, e->n_bytes);
      p += e->n_bytes;
    }
  return g_bytes_new_take (out, total);
}

gboolean
ddim_safetensors_writer_save (DdimSafetensorsWriter *w, const char *path,
                              GError **error)
{
  g_return_val_if_fail (w != NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  g_autoptr (GBytes) bytes = ddim_safetensors_writer_to_bytes (w);
  gsize size;
  const char *data = g_bytes_get_data (bytes, &size);
  g_autoptr (GError) local = NULL;
  /* Writes a temporary file in the same folder, fsyncs and renames it. */
  if (!g_file_set_contents_full (path, data, (gssize) size,
                                 G_FILE_SET_CONTENTS_CONSISTENT, 0666, &local))
    {
      g_autofree char *display = g_filename_display_name (path);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "could not save '%s': %s",
                   display, local->message);
      return FALSE;
    }
  return TRUE;
}
