/* The legacy torch.save layout (torch < 1.6, private): five pickles (magic
 * number, protocol version 1001, system info, the object, the sorted list
 * of storage keys), then for each key its element count (int64 LE) and raw
 * little-endian bytes. See docs/torch-checkpoints-notes.md §1.3. */
#pragma once

#include <glib.h>

#include "io/torch-pickle.h"

G_BEGIN_DECLS

/* The legacy magic: pickle protocol 2, LONG1 of 10 bytes, STOP. */
#define DDIM_TORCH_LEGACY_MAGIC "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e"
#define DDIM_TORCH_LEGACY_MAGIC_LEN 15

typedef struct {
  const guint8 *data;     /* inside the file */
  guint64       n_bytes;
} DdimTorchRecord;

/* Reads the pickles and locates every storage record of @data (borrowed).
 * Returns the object pickle (the 4th) and sets *records to a table from
 * key (owned) to DdimTorchRecord (owned). Each key's element size comes
 * from the storage type the object pickle gives it; a key listed but never
 * used, used with two types, listed twice, or whose count or bytes do not
 * fit is a DDIM_ERROR_FORMAT error. */
DdimPickle *ddim_torch_legacy_read (const guint8 *data, gsize length, GHashTable **records,
                                    GError **error);

G_END_DECLS
