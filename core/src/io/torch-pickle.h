/* A restricted unpickler for torch.save pickles (private to libddim).
 *
 * It builds an inert tree of values: nothing is called or imported. GLOBAL
 * and STACK_GLOBAL are resolved against a closed allow-list (the names
 * torch state dicts use); REDUCE, NEWOBJ and BUILD are only accepted for
 * the combinations listed in torch-pickle.c. Persistent ids become storage
 * references (key, dtype, element count) that the container reader
 * (torch-file.c) resolves to bytes; tensors are views (offset, size, stride
 * in elements) over those references, checked against the storage's
 * element count as soon as they are built.
 *
 * Limits (any input, however hostile, fails with a DDIM_ERROR_FORMAT error
 * instead): stack, mark and memo sizes are capped and bounded by the input
 * length, every read is bounded by the input, and the parser never
 * recurses, so total memory is O(input length). */
#pragma once

#include <glib.h>

#include "ddim/safetensors.h"

G_BEGIN_DECLS

typedef enum {
  DDIM_PV_NONE,
  DDIM_PV_BOOL,
  DDIM_PV_INT,
  DDIM_PV_FLOAT,
  DDIM_PV_STR,      /* UTF-8 is not checked; NUL-terminated copy */
  DDIM_PV_BYTES,    /* bytes, big ints, _codecs.encode results: opaque */
  DDIM_PV_TUPLE,
  DDIM_PV_LIST,
  DDIM_PV_DICT,     /* plain dict or OrderedDict (see ordered) */
  DDIM_PV_GLOBAL,   /* an allow-listed name, only as a tag */
  DDIM_PV_STORAGE,  /* a persistent id */
  DDIM_PV_TENSOR
} DdimPickleKind;

typedef struct _DdimPickleValue DdimPickleValue;

typedef struct {
  const char *key;        /* data/<key> in zip files, root key in legacy files */
  DdimDtype   dtype;      /* U8 for torch.UntypedStorage */
  gint64      numel;      /* elements of dtype the record holds */
  /* Legacy storage views (view_metadata): the view covers elements
   * [view_offset, view_offset + view_numel) of the root storage. */
  gint64      view_offset;
  gint64      view_numel;
} DdimPickleStorage;

typedef struct {
  const DdimPickleValue *storage;   /* DDIM_PV_STORAGE */
  DdimDtype dtype;                  /* element type of the tensor */
  gint64    offset;                 /* in elements of dtype, from the storage (view) start */
  int       ndim;
  gint64    size[DDIM_MAX_DIMS];
  gint64    stride[DDIM_MAX_DIMS];  /* in elements, >= 0 */
  gint64    numel;
} DdimPickleTensor;

struct _DdimPickleValue {
  DdimPickleKind kind;
  union {
    gboolean b;
    gint64   i;
    double   f;
    struct {
      const char *s;
      gsize       len;
    } str;
    struct {
      DdimPickleValue **items;  /* DICT: key, value, key, value, ... */
      guint             n;
      guint             cap;
      gboolean          ordered;
    } seq;
    int               global;   /* index into the allow-list (torch-pickle.c) */
    DdimPickleStorage storage;
    DdimPickleTensor  tensor;
  } u;
};

typedef enum {
  DDIM_PICKLE_ZIP,     /* persistent ids are 5-tuples */
  DDIM_PICKLE_LEGACY   /* persistent ids are 6-tuples (with view_metadata) */
} DdimPickleFlavour;

typedef struct _DdimPickle DdimPickle;

/* Unpickles the pickle that starts at @data (at most @length bytes are
 * read; the pickle ends at its STOP, whose end is stored in *consumed).
 * @where names the pickle in messages ("data.pkl"). DDIM_ERROR_FORMAT for
 * malformed input, DDIM_ERROR_UNSUPPORTED for globals outside the
 * allow-list and opcodes state dicts never use. */
DdimPickle *ddim_pickle_load (const guint8 *data, gsize length, DdimPickleFlavour flavour,
                              const char *where, gsize *consumed, GError **error);
void        ddim_pickle_free (DdimPickle *pickle);
/* The unpickled object; borrowed from @pickle. */
const DdimPickleValue *ddim_pickle_get_root (DdimPickle *pickle);

/* Every value the pickle built, reachable or not (the legacy reader uses
 * this to learn the element type of each storage key). Borrowed. */
guint                  ddim_pickle_get_n_values (DdimPickle *pickle);
const DdimPickleValue *ddim_pickle_get_value (DdimPickle *pickle, guint index);

/* Human-readable kind of a value, for messages ("dict", "tensor"...). */
const char *ddim_pickle_value_kind_name (const DdimPickleValue *value);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimPickle, ddim_pickle_free)

G_END_DECLS
