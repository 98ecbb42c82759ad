/* Restricted unpickler for torch.save pickles; see torch-pickle.h.
 *
 * Opcodes follow CPython's Lib/pickle.py; the allow-list and the accepted
 * REDUCE/BUILD combinations follow torch's own weights-only unpickler,
 * narrowed to what state dicts hold (docs/torch-checkpoints-notes.md
 * §1.4-1.5). Globals are checked when they are read, so a pickle naming
 * anything else (os.system, builtins.eval...) fails there, and nothing is
 * ever called: REDUCE only builds inert values. */

#include "io/torch-pickle.h"
#include "ddim/error.h"

#include <string.h>

/* Caps; each also bounded by the input length, since every stack entry,
 * mark and memo slot costs at least one input byte. */
#define STACK_LIMIT     (1u << 20)
#define MARK_LIMIT      4096u
#define MEMO_LIMIT      (1u << 24)
#define CONTAINER_LIMIT (1u << 26)
#define KEY_LIMIT       256u
#define GLOBAL_NAME_LIMIT 256u

typedef enum {
  G_ORDERED_DICT,
  G_REBUILD_TENSOR,           /* _rebuild_tensor (torch < 1.0) */
  G_REBUILD_TENSOR_V2,
  G_REBUILD_TENSOR_V3,
  G_REBUILD_PARAMETER,
  G_REBUILD_PARAMETER_STATE,
  G_REBUILD_FROM_TYPE_V2,
  G_STORAGE_TYPE,             /* torch.<X>Storage / torch.UntypedStorage */
  G_DTYPE,                    /* torch.float32 ... */
  G_TENSOR_CLASS,             /* torch.Tensor, torch.nn.parameter.Parameter */
  G_SIZE,
  G_DEVICE,
  G_CODECS_ENCODE
} GlobalKind;

typedef struct {
  const char *module;
  const char *name;
  GlobalKind  kind;
  DdimDtype   dtype;
} AllowedGlobal;

/* The closed allow-list. Anything not here is refused when it is read. */
static const AllowedGlobal allowed_globals[] = {
  { "collections", "OrderedDict", G_ORDERED_DICT, 0 },
  { "torch._utils", "_rebuild_tensor", G_REBUILD_TENSOR, 0 },
  { "torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR_V2, 0 },
  { "torch._utils", "_rebuild_tensor_v3", G_REBUILD_TENSOR_V3, 0 },
  { "torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, 0 },
  { "torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAMETER_STATE, 0 },
  { "torch._tensor", "_rebuild_from_type_v2", G_REBUILD_FROM_TYPE_V2, 0 },
  { "torch", "DoubleStorage", G_STORAGE_TYPE, DDIM_DTYPE_F64 },
  { "torch", "FloatStorage", G_STORAGE_TYPE, DDIM_DTYPE_F32 },
  { "torch", "HalfStorage", G_STORAGE_TYPE, DDIM_DTYPE_F16 },
  { "torch", "BFloat16Storage", G_STORAGE_TYPE, DDIM_DTYPE_BF16 },
  { "torch", "LongStorage", G_STORAGE_TYPE, DDIM_DTYPE_I64 },
  { "torch", "IntStorage", G_STORAGE_TYPE, DDIM_DTYPE_I32 },
  { "torch", "ShortStorage", G_STORAGE_TYPE, DDIM_DTYPE_I16 },
  { "torch", "CharStorage", G_STORAGE_TYPE, DDIM_DTYPE_I8 },
  { "torch", "ByteStorage", G_STORAGE_TYPE, DDIM_DTYPE_U8 },
  { "torch", "BoolStorage", G_STORAGE_TYPE, DDIM_DTYPE_BOOL },
  { "torch", "UntypedStorage", G_STORAGE_TYPE, DDIM_DTYPE_U8 },
  { "torch", "float64", G_DTYPE, DDIM_DTYPE_F64 },
  { "torch", "double", G_DTYPE, DDIM_DTYPE_F64 },
  { "torch", "float32", G_DTYPE, DDIM_DTYPE_F32 },
  { "torch", "float", G_DTYPE, DDIM_DTYPE_F32 },
  { "torch", "float16", G_DTYPE, DDIM_DTYPE_F16 },
  { "torch", "half", G_DTYPE, DDIM_DTYPE_F16 },
  { "torch", "bfloat16", G_DTYPE, DDIM_DTYPE_BF16 },
  { "torch", "int64", G_DTYPE, DDIM_DTYPE_I64 },
  { "torch", "long", G_DTYPE, DDIM_DTYPE_I64 },
  { "torch", "int32", G_DTYPE, DDIM_DTYPE_I32 },
  { "torch", "int", G_DTYPE, DDIM_DTYPE_I32 },
  { "torch", "int16", G_DTYPE, DDIM_DTYPE_I16 },
  { "torch", "short", G_DTYPE, DDIM_DTYPE_I16 },
  { "torch", "int8", G_DTYPE, DDIM_DTYPE_I8 },
  { "torch", "uint8", G_DTYPE, DDIM_DTYPE_U8 },
  { "torch", "bool", G_DTYPE, DDIM_DTYPE_BOOL },
  { "torch", "Tensor", G_TENSOR_CLASS, 0 },
  { "torch.nn.parameter", "Parameter", G_TENSOR_CLASS, 0 },
  { "torch", "Size", G_SIZE, 0 },
  { "torch", "device", G_DEVICE, 0 },
  { "_codecs", "encode", G_CODECS_ENCODE, 0 },
};

struct _DdimPickle {
  GPtrArray       *values;   /* owns every DdimPickleValue */
  DdimPickleValue *root;
};

typedef struct {
  DdimPickle        *pickle;
  const guint8      *data;
  gsize              length;
  gsize              pos;
  gsize              op_pos;   /* start of the current opcode, for messages */
  DdimPickleFlavour  flavour;
  const char        *where;
  GPtrArray         *stack;    /* borrowed values */
  GArray            *marks;    /* guint stack lengths */
  GPtrArray         *memo;     /* borrowed values, NULL = unset */
} Parser;

static void
value_free (gpointer p)
{
  DdimPickleValue *v = p;
  if (v->kind == DDIM_PV_TUPLE || v->kind == DDIM_PV_LIST || v->kind == DDIM_PV_DICT)
    g_free (v->u.seq.items);
  g_free (v);
}

void
ddim_pickle_free (DdimPickle *pickle)
{
  if (pickle == NULL)
    return;
  g_ptr_array_unref (pickle->values);
  g_free (pickle);
}

const DdimPickleValue *
ddim_pickle_get_root (DdimPickle *pickle)
{
  g_return_val_if_fail (pickle != NULL, NULL);
  return pickle->root;
}

guint
ddim_pickle_get_n_values (DdimPickle *pickle)
{
  g_return_val_if_fail (pickle != NULL, 0);
  return pickle->values->len;
}

const DdimPickleValue *
ddim_pickle_get_value (DdimPickle *pickle, guint index)
{
  g_return_val_if_fail (pickle != NULL && index < pickle->values->len, NULL);
  return g_ptr_array_index (pickle->values, index);
}

const char *
ddim_pickle_value_kind_name (const DdimPickleValue *value)
{
  static const char *const names[] = {
    "None", "bool", "int", "float", "str", "bytes", "tuple", "list", "dict",
    "global", "storage", "tensor",
  };
  if (value->kind == DDIM_PV_DICT && value->u.seq.ordered)
    return "OrderedDict";
  return names[value->kind];
}

static gboolean G_GNUC_PRINTF (3, 4)
fail (Parser *p, GError **error, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  g_autofree char *what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "%s, byte %" G_GSIZE_FORMAT ": %s",
               p->where, p->op_pos, what);
  return FALSE;
}

static gboolean G_GNUC_PRINTF (3, 4)
refuse (Parser *p, GError **error, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  g_autofree char *what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED, "%s, byte %" G_GSIZE_FORMAT ": %s",
               p->where, p->op_pos, what);
  return FALSE;
}

static DdimPickleValue *
new_value (Parser *p, DdimPickleKind kind, gsize extra)
{
  DdimPickleValue *v = g_malloc0 (sizeof (DdimPickleValue) + extra);
  v->kind = kind;
  g_ptr_array_add (p->pickle->values, v);
  return v;
}

static DdimPickleValue *
new_string (Parser *p, DdimPickleKind kind, const guint8 *bytes, gsize len)
{
  DdimPickleValue *v = new_value (p, kind, len + 1);
  char *copy = (char *) (v + 1);
  memcpy (copy, bytes, len);
  copy[len] = '\0';
  v->u.str.s = copy;
  v->u.str.len = len;
  return v;
}

static gboolean
seq_append (Parser *p, DdimPickleValue *seq, DdimPickleValue *item, GError **error)
{
  if (seq->u.seq.n >= CONTAINER_LIMIT)
    return fail (p, error, "container longer than %u items", CONTAINER_LIMIT);
  if (seq->u.seq.n == seq->u.seq.cap)
    {
      seq->u.seq.cap = seq->u.seq.cap == 0 ? 4 : seq->u.seq.cap * 2;
      seq->u.seq.items = g_renew (DdimPickleValue *, seq->u.seq.items, seq->u.seq.cap);
    }
  seq->u.seq.items[seq->u.seq.n++] = item;
  return TRUE;
}

/* ----------------------------------------------------------- reading */

static gboolean
read_bytes (Parser *p, gsize n, const guint8 **out, GError **error)
{
  if (n > p->length - p->pos)
    return fail (p, error, "needs %" G_GSIZE_FORMAT " bytes but only %" G_GSIZE_FORMAT
                 " are left (truncated?)", n, p->length - p->pos);
  *out = p->data + p->pos;
  p->pos += n;
  return TRUE;
}

static gboolean
read_uint (Parser *p, guint n, guint64 *out, GError **error)
{
  const guint8 *b = NULL;
  if (!read_bytes (p, n, &b, error))
    return FALSE;
  guint64 v = 0;
  for (guint i = 0; i < n; i++)
    v |= (guint64) b[i] << (8 * i);
  *out = v;
  return TRUE;
}

/* A text line of GLOBAL, without its '\n'. */
static gboolean
read_line (Parser *p, const char **out, gsize *len, GError **error)
{
  gsize left = p->length - p->pos;
  gsize limit = MIN (left, GLOBAL_NAME_LIMIT + 1);
  const guint8 *start = p->data + p->pos;
  const guint8 *nl = memchr (start, '\n', limit);
  if (nl == NULL)
    return fail (p, error, "GLOBAL name not terminated within %u bytes (truncated?)", GLOBAL_NAME_LIMIT);
  *out = (const char *) start;
  *len = (gsize) (nl - start);
  p->pos += *len + 1;
  return TRUE;
}

/* ------------------------------------------------------------- stack */

static gboolean
push (Parser *p, DdimPickleValue *v, GError **error)
{
  if (p->stack->len >= STACK_LIMIT)
    return fail (p, error, "stack deeper than %u entries", STACK_LIMIT);
  g_ptr_array_add (p->stack, v);
  return TRUE;
}

static gboolean
pop (Parser *p, DdimPickleValue **out, GError **error)
{
  guint floor = p->marks->len > 0 ? g_array_index (p->marks, guint, p->marks->len - 1) : 0;
  if (p->stack->len <= floor)
    return fail (p, error, "stack underflow");
  *out = g_ptr_array_steal_index (p->stack, p->stack->len - 1);
  return TRUE;
}

static gboolean
top (Parser *p, DdimPickleValue **out, GError **error)
{
  guint floor = p->marks->len > 0 ? g_array_index (p->marks, guint, p->marks->len - 1) : 0;
  if (p->stack->len <= floor)
    return fail (p, error, "stack underflow");
  *out = g_ptr_array_index (p->stack, p->stack->len - 1);
  return TRUE;
}

/* Pops the topmost mark; the items above it are stack[*first, stack->len). */
static gboolean
pop_mark (Parser *p, guint *first, GError **error)
{
  if (p->marks->len == 0)
    return fail (p, error, "no MARK on the stack");
  *first = g_array_index (p->marks, guint, p->marks->len - 1);
  g_array_set_size (p->marks, p->marks->len - 1);
  return TRUE;
}

static gboolean
push_seq_from (Parser *p, DdimPickleKind kind, guint first, GError **error)
{
  DdimPickleValue *v = new_value (p, kind, 0);
  for (guint i = first; i < p->stack->len; i++)
    if (!seq_append (p, v, g_ptr_array_index (p->stack, i), error))
      return FALSE;
  g_ptr_array_set_size (p->stack, first);
  return push (p, v, error);
}

static gboolean
memo_put (Parser *p, guint64 index, GError **error)
{
  DdimPickleValue *v = NULL;
  if (!top (p, &v, error))
    return FALSE;
  /* Picklers number memo entries from 0 up, so an index past the input
   * length is never legitimate; this bounds the memo by the input. */
  if (index >= MEMO_LIMIT || index > p->length)
    return fail (p, error, "memo index %" G_GUINT64_FORMAT " out of range", index);
  if (index >= p->memo->len)
    g_ptr_array_set_size (p->memo, (guint) index + 1);
  g_ptr_array_index (p->memo, (guint) index) = v;
  return TRUE;
}

static gboolean
memo_get (Parser *p, guint64 index, GError **error)
{
  if (index >= p->memo->len || g_ptr_array_index (p->memo, (guint) index) == NULL)
    return fail (p, error, "memo index %" G_GUINT64_FORMAT " was never stored", index);
  return push (p, g_ptr_array_index (p->memo, (guint) index), error);
}

/* ----------------------------------------------------------- globals */

static gboolean
resolve_global (Parser *p, const char *module, gsize module_len, const char *name,
                gsize name_len, GError **error)
{
  g_autofree char *mod = g_strndup (module, module_len);
  g_autofree char *nam = g_strndup (name, name_len);
  /* torch renamed torch.tensor to torch._tensor (torch's load_module_mapping). */
  const char *lookup_mod = g_strcmp0 (mod, "torch.tensor") == 0 ? "torch._tensor" : mod;
  for (gsize i = 0; i < G_N_ELEMENTS (allowed_globals); i++)
    if (strlen (lookup_mod) == strlen (allowed_globals[i].module)
        && strcmp (lookup_mod, allowed_globals[i].module) == 0
        && strlen (nam) == name_len && strcmp (nam, allowed_globals[i].name) == 0)
      {
        DdimPickleValue *v = new_value (p, DDIM_PV_GLOBAL, 0);
        v->u.global = (int) i;
        return push (p, v, error);
      }
  g_autofree char *shown = g_strescape (mod, NULL);
  g_autofree char *shown_name = g_strescape (nam, NULL);
  return refuse (p, error, "refusing global '%s.%s': not on the list of names a state dict "
                 "may use (nothing was executed)", shown, shown_name);
}

static const AllowedGlobal *
global_of (const DdimPickleValue *v)
{
  return v->kind == DDIM_PV_GLOBAL ? &allowed_globals[v->u.global] : NULL;
}

/* --------------------------------------------------- persistent ids */

static gboolean
get_int (const DdimPickleValue *v, gint64 *out)
{
  if (v->kind == DDIM_PV_INT)
    *out = v->u.i;
  else if (v->kind == DDIM_PV_BOOL)
    *out = v->u.b;
  else
    return FALSE;
  return TRUE;
}

static gboolean
persistent_load (Parser *p, DdimPickleValue *pid, GError **error)
{
  guint want = p->flavour == DDIM_PICKLE_ZIP ? 5 : 6;
  if (pid->kind != DDIM_PV_TUPLE || pid->u.seq.n < 1)
    return fail (p, error, "persistent id is a %s, not a tuple", ddim_pickle_value_kind_name (pid));
  DdimPickleValue **it = pid->u.seq.items;
  if (it[0]->kind != DDIM_PV_STR || strcmp (it[0]->u.str.s, "storage") != 0)
    {
      if (it[0]->kind == DDIM_PV_STR && strcmp (it[0]->u.str.s, "module") == 0)
        return refuse (p, error, "the file holds a pickled module, not a state dict");
      return fail (p, error, "persistent id is not a ('storage', ...) tuple");
    }
  if (pid->u.seq.n != want)
    return fail (p, error, "storage persistent id has %u items, expected %u", pid->u.seq.n, want);
  const AllowedGlobal *type = global_of (it[1]);
  if (type == NULL || type->kind != G_STORAGE_TYPE)
    return fail (p, error, "storage persistent id has no storage type");
  if (it[2]->kind != DDIM_PV_STR || it[2]->u.str.len == 0 || it[2]->u.str.len > KEY_LIMIT
      || strchr (it[2]->u.str.s, '/') != NULL || strlen (it[2]->u.str.s) != it[2]->u.str.len)
    return fail (p, error, "storage key is not a short name");
  if (it[3]->kind != DDIM_PV_STR)
    return fail (p, error, "storage location is a %s, not a str", ddim_pickle_value_kind_name (it[3]));
  gint64 numel;
  gsize elsize = ddim_dtype_size (type->dtype);
  if (!get_int (it[4], &numel) || numel < 0 || numel > G_MAXINT64 / 16)
    return fail (p, error, "storage '%s' has a bad element count", it[2]->u.str.s);
  DdimPickleValue *v = new_value (p, DDIM_PV_STORAGE, 0);
  v->u.storage.key = it[2]->u.str.s;
  v->u.storage.dtype = type->dtype;
  v->u.storage.numel = numel;
  v->u.storage.view_offset = 0;
  v->u.storage.view_numel = numel;
  (void) elsize;
  if (want == 6 && it[5]->kind != DDIM_PV_NONE)
    {
      /* Pre-1.0 storage views: (view_key, offset, size) in elements. */
      DdimPickleValue *view = it[5];
      gint64 off, size;
      if (view->kind != DDIM_PV_TUPLE || view->u.seq.n != 3
          || view->u.seq.items[0]->kind != DDIM_PV_STR
          || !get_int (view->u.seq.items[1], &off) || !get_int (view->u.seq.items[2], &size))
        return fail (p, error, "storage '%s' has malformed view metadata", v->u.storage.key);
      if (off < 0 || size < 0 || off > numel || size > numel - off)
        return fail (p, error, "storage view [%" G_GINT64_FORMAT ", +%" G_GINT64_FORMAT
                     ") lies outside storage '%s' of %" G_GINT64_FORMAT " elements",
                     off, size, v->u.storage.key, numel);
      v->u.storage.view_offset = off;
      v->u.storage.view_numel = size;
    }
  return push (p, v, error);
}

/* ------------------------------------------------------- tensor views */

static gboolean
int_tuple (const DdimPickleValue *v, int *ndim, gint64 *out)
{
  if (v->kind != DDIM_PV_TUPLE)
    return FALSE;
  if (v->u.seq.n > DDIM_MAX_DIMS)
    {
      *ndim = -1;
      return FALSE;
    }
  for (guint i = 0; i < v->u.seq.n; i++)
    if (!get_int (v->u.seq.items[i], &out[i]))
      return FALSE;
  *ndim = (int) v->u.seq.n;
  return TRUE;
}

/* _rebuild_tensor(_v2/_v3) (storage, offset, size, stride, ...) with the
 * element type @dtype (the storage's for v1/v2). Checks that every element
 * the view can address lies inside the storage (view). */
static gboolean
rebuild_tensor (Parser *p, DdimPickleValue **args, gboolean has_dtype, DdimDtype dtype,
                DdimPickleValue **out, GError **error)
{
  if (args[0]->kind != DDIM_PV_STORAGE)
    return fail (p, error, "tensor rebuilt from a %s, not a storage",
                 ddim_pickle_value_kind_name (args[0]));
  const DdimPickleStorage *st = &args[0]->u.storage;
  if (!has_dtype)
    dtype = st->dtype;
  DdimPickleTensor t = { .storage = args[0], .dtype = dtype };
  if (!get_int (args[1], &t.offset) || t.offset < 0)
    return fail (p, error, "tensor storage offset is not a non-negative int");
  int nsize = 0, nstride = 0;
  if (!int_tuple (args[2], &nsize, t.size))
    {
      if (nsize < 0)
        return refuse (p, error, "tensor has more than %d dimensions", DDIM_MAX_DIMS);
      return fail (p, error, "tensor size is not a tuple of ints");
    }
  if (!int_tuple (args[3], &nstride, t.stride) || nstride != nsize)
    return fail (p, error, "tensor stride is not a tuple of %d ints", nsize);
  t.ndim = nsize;
  /* Everything in bytes of the storage view, so typed, untyped (v3) and
   * legacy view storages are checked the same way. */
  gsize elsize = ddim_dtype_size (dtype);
  guint64 storage_bytes = (guint64) st->view_numel * ddim_dtype_size (st->dtype);
  guint64 numel = 1, extent = 0;
  for (int d = 0; d < t.ndim; d++)
    {
      if (t.size[d] < 0 || t.stride[d] < 0)
        return fail (p, error, "tensor has a negative size or stride in dimension %d", d);
      if (!g_uint64_checked_mul (&numel, numel, (guint64) t.size[d]) || numel > G_MAXINT64 / 16)
        return fail (p, error, "tensor element count overflows");
    }
  t.numel = (gint64) numel;
  if (numel > 0)
    {
      for (int d = 0; d < t.ndim; d++)
        {
          guint64 span;
          if (!g_uint64_checked_mul (&span, (guint64) (t.size[d] - 1), (guint64) t.stride[d])
              || !g_uint64_checked_add (&extent, extent, span))
            return fail (p, error, "tensor extent overflows");
        }
      guint64 last, end_bytes;
      if (!g_uint64_checked_add (&last, (guint64) t.offset, extent)
          || !g_uint64_checked_add (&last, last, 1)
          || !g_uint64_checked_mul (&end_bytes, last, elsize)
          || end_bytes > storage_bytes)
        return fail (p, error, "tensor view (offset %" G_GINT64_FORMAT ", %" G_GUINT64_FORMAT
                     " elements of %s) reaches past the end of storage '%s' (%" G_GUINT64_FORMAT
                     " bytes)", t.offset, numel, ddim_dtype_name (dtype), st->key, storage_bytes);
    }
  DdimPickleValue *v = new_value (p, DDIM_PV_TENSOR, 0);
  v->u.tensor = t;
  *out = v;
  return TRUE;
}

static gboolean
reduce (Parser *p, const DdimPickleValue *callable, DdimPickleValue *args, gboolean nested,
        DdimPickleValue **out, GError **error)
{
  const AllowedGlobal *g = global_of (callable);
  if (g == NULL)
    return refuse (p, error, "REDUCE of a %s: only allow-listed functions can be called",
                   ddim_pickle_value_kind_name (callable));
  if (args->kind != DDIM_PV_TUPLE)
    return fail (p, error, "REDUCE arguments are a %s, not a tuple",
                 ddim_pickle_value_kind_name (args));
  guint n = args->u.seq.n;
  DdimPickleValue **a = args->u.seq.items;
  switch (g->kind)
    {
    case G_ORDERED_DICT:
      if (n != 0)
        return fail (p, error, "OrderedDict called with %u arguments", n);
      *out = new_value (p, DDIM_PV_DICT, 0);
      (*out)->u.seq.ordered = TRUE;
      return TRUE;
    case G_REBUILD_TENSOR:
      if (n != 4)
        return fail (p, error, "_rebuild_tensor takes 4 arguments, got %u", n);
      return rebuild_tensor (p, a, FALSE, 0, out, error);
    case G_REBUILD_TENSOR_V2:
      if (n != 6 && n != 7)
        return fail (p, error, "_rebuild_tensor_v2 takes 6 or 7 arguments, got %u", n);
      return rebuild_tensor (p, a, FALSE, 0, out, error);
    case G_REBUILD_TENSOR_V3:
      if (n != 7 && n != 8)
        return fail (p, error, "_rebuild_tensor_v3 takes 7 or 8 arguments, got %u", n);
      if (global_of (a[6]) == NULL || global_of (a[6])->kind != G_DTYPE)
        return fail (p, error, "_rebuild_tensor_v3 without a dtype");
      return rebuild_tensor (p, a, TRUE, global_of (a[6])->dtype, out, error);
    case G_REBUILD_PARAMETER:
    case G_REBUILD_PARAMETER_STATE:
      if (n != (g->kind == G_REBUILD_PARAMETER ? 3u : 4u))
        return fail (p, error, "%s takes %u arguments, got %u", g->name,
                     g->kind == G_REBUILD_PARAMETER ? 3u : 4u, n);
      if (a[0]->kind != DDIM_PV_TENSOR)
        return fail (p, error, "Parameter of a %s, not a tensor", ddim_pickle_value_kind_name (a[0]));
      *out = a[0];
      return TRUE;
    case G_REBUILD_FROM_TYPE_V2:
      {
        if (nested)
          return fail (p, error, "nested _rebuild_from_type_v2");
        if (n != 4)
          return fail (p, error, "_rebuild_from_type_v2 takes 4 arguments, got %u", n);
        const AllowedGlobal *type = global_of (a[1]);
        if (type == NULL || type->kind != G_TENSOR_CLASS)
          return refuse (p, error, "_rebuild_from_type_v2 of a type other than Tensor/Parameter");
        const AllowedGlobal *func = global_of (a[0]);
        if (func == NULL || (func->kind != G_REBUILD_TENSOR_V2 && func->kind != G_REBUILD_TENSOR_V3
                             && func->kind != G_REBUILD_TENSOR && func->kind != G_REBUILD_PARAMETER
                             && func->kind != G_REBUILD_PARAMETER_STATE))
          return refuse (p, error, "_rebuild_from_type_v2 of something other than a tensor rebuild");
        return reduce (p, a[0], a[2], TRUE, out, error);
      }
    case G_SIZE:
      if (n != 1 || a[0]->kind != DDIM_PV_TUPLE)
        return fail (p, error, "torch.Size takes one tuple");
      *out = a[0];
      return TRUE;
    case G_DEVICE:
      if (n < 1 || n > 2 || a[0]->kind != DDIM_PV_STR)
        return fail (p, error, "torch.device takes a str");
      *out = a[0];
      return TRUE;
    case G_CODECS_ENCODE:
      if (n != 2 || a[0]->kind != DDIM_PV_STR || a[1]->kind != DDIM_PV_STR)
        return fail (p, error, "_codecs.encode takes two str");
      /* Protocol-2 bytes (optimizer or RNG state): kept opaque. */
      *out = new_string (p, DDIM_PV_BYTES, (const guint8 *) a[0]->u.str.s, a[0]->u.str.len);
      return TRUE;
    case G_STORAGE_TYPE:
    case G_DTYPE:
    case G_TENSOR_CLASS:
    default:
      return refuse (p, error, "REDUCE of %s.%s is not allowed", g->module, g->name);
    }
}

/* ------------------------------------------------------------ opcodes */

static gboolean
push_int (Parser *p, gint64 i, GError **error)
{
  DdimPickleValue *v = new_value (p, DDIM_PV_INT, 0);
  v->u.i = i;
  return push (p, v, error);
}

static gboolean
push_string (Parser *p, DdimPickleKind kind, guint64 len, GError **error)
{
  const guint8 *b = NULL;
  if (len > p->length - p->pos)
    return fail (p, error, "string of %" G_GUINT64_FORMAT " bytes runs past the end (truncated?)",
                 len);
  if (!read_bytes (p, (gsize) len, &b, error))
    return FALSE;
  return push (p, new_string (p, kind, b, (gsize) len), error);
}

static gboolean
step (Parser *p, gboolean *stop, GError **error)
{
  const guint8 *b = NULL;
  guint64 u = 0;
  DdimPickleValue *v = NULL, *k = NULL, *args = NULL, *callable = NULL;
  guint first = 0;

  p->op_pos = p->pos;
  if (p->pos >= p->length)
    return fail (p, error, "pickle ends without STOP (truncated?)");
  guint8 op = p->data[p->pos++];
  switch (op)
    {
    case 0x80: /* PROTO */
      if (!read_uint (p, 1, &u, error))
        return FALSE;
      if (u < 2 || u > 5)
        return refuse (p, error, "pickle protocol %u is not supported (2 to 5 are)", (guint) u);
      return TRUE;
    case 0x95: /* FRAME: only a read-ahead hint */
      return read_uint (p, 8, &u, error);
    case '.': /* STOP */
      if (p->stack->len == 0)
        return fail (p, error, "STOP with an empty stack");
      p->pickle->root = g_ptr_array_index (p->stack, p->stack->len - 1);
      *stop = TRUE;
      return TRUE;
    case '(': /* MARK */
      if (p->marks->len >= MARK_LIMIT)
        return fail (p, error, "more than %u nested MARKs", MARK_LIMIT);
      g_array_append_val (p->marks, p->stack->len);
      return TRUE;
    case '}': /* EMPTY_DICT */
      return push (p, new_value (p, DDIM_PV_DICT, 0), error);
    case ']': /* EMPTY_LIST */
      return push (p, new_value (p, DDIM_PV_LIST, 0), error);
    case ')': /* EMPTY_TUPLE */
      return push (p, new_value (p, DDIM_PV_TUPLE, 0), error);
    case 't': /* TUPLE */
      return pop_mark (p, &first, error) && push_seq_from (p, DDIM_PV_TUPLE, first, error);
    case 'l': /* LIST */
      return pop_mark (p, &first, error) && push_seq_from (p, DDIM_PV_LIST, first, error);
    case 'd': /* DICT */
      if (!pop_mark (p, &first, error))
        return FALSE;
      if ((p->stack->len - first) % 2 != 0)
        return fail (p, error, "DICT with an odd number of items");
      return push_seq_from (p, DDIM_PV_DICT, first, error);
    case 0x85: /* TUPLE1 */
    case 0x86: /* TUPLE2 */
    case 0x87: /* TUPLE3 */
      {
        guint n = op - 0x84u;
        guint floor = p->marks->len > 0 ? g_array_index (p->marks, guint, p->marks->len - 1) : 0;
        if (p->stack->len < floor + n)
          return fail (p, error, "stack underflow");
        return push_seq_from (p, DDIM_PV_TUPLE, p->stack->len - n, error);
      }
    case 's': /* SETITEM */
      if (!pop (p, &v, error) || !pop (p, &k, error) || !top (p, &args, error))
        return FALSE;
      if (args->kind != DDIM_PV_DICT)
        return fail (p, error, "SETITEM on a %s, not a dict", ddim_pickle_value_kind_name (args));
      return seq_append (p, args, k, error) && seq_append (p, args, v, error);
    case 'u': /* SETITEMS */
      if (!pop_mark (p, &first, error))
        return FALSE;
      if ((p->stack->len - first) % 2 != 0)
        return fail (p, error, "SETITEMS with an odd number of items");
      if (first == 0 || (p->marks->len > 0
                         && g_array_index (p->marks, guint, p->marks->len - 1) >= first))
        return fail (p, error, "SETITEMS without a dict");
      args = g_ptr_array_index (p->stack, first - 1);
      if (args->kind != DDIM_PV_DICT)
        return fail (p, error, "SETITEMS on a %s, not a dict", ddim_pickle_value_kind_name (args));
      for (guint i = first; i < p->stack->len; i++)
        if (!seq_append (p, args, g_ptr_array_index (p->stack, i), error))
          return FALSE;
      g_ptr_array_set_size (p->stack, first);
      return TRUE;
    case 'a': /* APPEND */
      if (!pop (p, &v, error) || !top (p, &args, error))
        return FALSE;
      if (args->kind != DDIM_PV_LIST)
        return fail (p, error, "APPEND to a %s, not a list", ddim_pickle_value_kind_name (args));
      return seq_append (p, args, v, error);
    case 'e': /* APPENDS */
      if (!pop_mark (p, &first, error))
        return FALSE;
      if (first == 0 || (p->marks->len > 0
                         && g_array_index (p->marks, guint, p->marks->len - 1) >= first))
        return fail (p, error, "APPENDS without a list");
      args = g_ptr_array_index (p->stack, first - 1);
      if (args->kind != DDIM_PV_LIST)
        return fail (p, error, "APPENDS to a %s, not a list", ddim_pickle_value_kind_name (args));
      for (guint i = first; i < p->stack->len; i++)
        if (!seq_append (p, args, g_ptr_array_index (p->stack, i), error))
          return FALSE;
      g_ptr_array_set_size (p->stack, first);
      return TRUE;
    case 'X': /* BINUNICODE */
      return read_uint (p, 4, &u, error) && push_string (p, DDIM_PV_STR, u, error);
    case 0x8c: /* SHORT_BINUNICODE */
    case 'U':  /* SHORT_BINSTRING */
      return read_uint (p, 1, &u, error) && push_string (p, DDIM_PV_STR, u, error);
    case 0x8d: /* BINUNICODE8 */
      return read_uint (p, 8, &u, error) && push_string (p, DDIM_PV_STR, u, error);
    case 'T': /* BINSTRING (signed length) */
      if (!read_uint (p, 4, &u, error))
        return FALSE;
      if (u > G_MAXINT32)
        return fail (p, error, "BINSTRING with a negative length");
      return push_string (p, DDIM_PV_STR, u, error);
    case 'B': /* BINBYTES */
      return read_uint (p, 4, &u, error) && push_string (p, DDIM_PV_BYTES, u, error);
    case 'C': /* SHORT_BINBYTES */
      return read_uint (p, 1, &u, error) && push_string (p, DDIM_PV_BYTES, u, error);
    case 0x8e: /* BINBYTES8 */
      return read_uint (p, 8, &u, error) && push_string (p, DDIM_PV_BYTES, u, error);
    case 'K': /* BININT1 */
      return read_uint (p, 1, &u, error) && push_int (p, (gint64) u, error);
    case 'M': /* BININT2 */
      return read_uint (p, 2, &u, error) && push_int (p, (gint64) u, error);
    case 'J': /* BININT */
      return read_uint (p, 4, &u, error) && push_int (p, (gint32) (guint32) u, error);
    case 0x8a: /* LONG1 */
    case 0x8b: /* LONG4 */
      {
        if (!read_uint (p, op == 0x8a ? 1 : 4, &u, error))
          return FALSE;
        if (op == 0x8b && u > G_MAXINT32)
          return fail (p, error, "LONG4 with a negative length");
        if (u > 8)  /* big ints (the legacy magic number): opaque bytes */
          return push_string (p, DDIM_PV_BYTES, u, error);
        if (!read_bytes (p, (gsize) u, &b, error))
          return FALSE;
        guint64 bits = 0;
        for (guint i = 0; i < u; i++)
          bits |= (guint64) b[i] << (8 * i);
        if (u > 0 && u < 8 && (b[u - 1] & 0x80))
          bits |= ~G_GUINT64_CONSTANT (0) << (8 * u);   /* sign-extend */
        return push_int (p, (gint64) bits, error);
      }
    case 'G': /* BINFLOAT, big-endian */
      {
        if (!read_bytes (p, 8, &b, error))
          return FALSE;
        guint64 bits = 0;
        for (guint i = 0; i < 8; i++)
          bits = (bits << 8) | b[i];
        v = new_value (p, DDIM_PV_FLOAT, 0);
        memcpy (&v->u.f, &bits, sizeof bits);
        return push (p, v, error);
      }
    case 'N': /* NONE */
      return push (p, new_value (p, DDIM_PV_NONE, 0), error);
    case 0x88: /* NEWTRUE */
    case 0x89: /* NEWFALSE */
      v = new_value (p, DDIM_PV_BOOL, 0);
      v->u.b = op == 0x88;
      return push (p, v, error);
    case 'q': /* BINPUT */
      return read_uint (p, 1, &u, error) && memo_put (p, u, error);
    case 'r': /* LONG_BINPUT */
      return read_uint (p, 4, &u, error) && memo_put (p, u, error);
    case 0x94: /* MEMOIZE */
      return memo_put (p, p->memo->len, error);
    case 'h': /* BINGET */
      return read_uint (p, 1, &u, error) && memo_get (p, u, error);
    case 'j': /* LONG_BINGET */
      return read_uint (p, 4, &u, error) && memo_get (p, u, error);
    case 'c': /* GLOBAL */
      {
        const char *module, *name;
        gsize module_len, name_len;
        return read_line (p, &module, &module_len, error)
          && read_line (p, &name, &name_len, error)
          && resolve_global (p, module, module_len, name, name_len, error);
      }
    case 0x93: /* STACK_GLOBAL */
      if (!pop (p, &v, error) || !pop (p, &k, error))
        return FALSE;
      if (v->kind != DDIM_PV_STR || k->kind != DDIM_PV_STR)
        return fail (p, error, "STACK_GLOBAL of non-strings");
      return resolve_global (p, k->u.str.s, k->u.str.len, v->u.str.s, v->u.str.len, error);
    case 'R': /* REDUCE */
      if (!pop (p, &args, error) || !pop (p, &callable, error)
          || !reduce (p, callable, args, FALSE, &v, error))
        return FALSE;
      return push (p, v, error);
    case 0x81: /* NEWOBJ: cls.__new__(cls, *args), only for OrderedDict */
      if (!pop (p, &args, error) || !pop (p, &callable, error))
        return FALSE;
      if (global_of (callable) == NULL || global_of (callable)->kind != G_ORDERED_DICT)
        return refuse (p, error, "NEWOBJ of something other than OrderedDict");
      v = new_value (p, DDIM_PV_DICT, 0);
      v->u.seq.ordered = TRUE;
      return push (p, v, error);
    case 'b': /* BUILD */
      if (!pop (p, &v, error) || !top (p, &k, error))
        return FALSE;
      /* An OrderedDict's state is its attributes (state dicts' _metadata),
       * a Parameter's its Python attributes: neither becomes items. */
      if ((k->kind == DDIM_PV_DICT && k->u.seq.ordered) || k->kind == DDIM_PV_TENSOR)
        return TRUE;
      return fail (p, error, "BUILD on a %s (only OrderedDict and tensors take a state)",
                   ddim_pickle_value_kind_name (k));
    case 'Q': /* BINPERSID */
      return pop (p, &v, error) && persistent_load (p, v, error);
    default:
      return refuse (p, error, "pickle opcode 0x%02x is not one a state dict uses", op);
    }
}

DdimPickle *
ddim_pickle_load (const guint8 *data, gsize length, DdimPickleFlavour flavour,
                  const char *where, gsize *consumed, GError **error)
{
  g_return_val_if_fail (data != NULL || length == 0, NULL);
  g_return_val_if_fail (where != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  g_autoptr (DdimPickle) pickle = g_new0 (DdimPickle, 1);
  pickle->values = g_ptr_array_new_with_free_func (value_free);
  g_autoptr (GPtrArray) stack = g_ptr_array_new ();
  g_autoptr (GArray) marks = g_array_new (FALSE, FALSE, sizeof (guint));
  g_autoptr (GPtrArray) memo = g_ptr_array_new ();
  Parser p = {
    .pickle = pickle, .data = data, .length = length, .flavour = flavour, .where = where,
    .stack = stack, .marks = marks, .memo = memo,
  };
  gboolean stop = FALSE;
  while (!stop)
    if (!step (&p, &stop, error))
      return NULL;
  if (consumed != NULL)
    *consumed = p.pos;
  return g_steal_pointer (&pickle);
}
