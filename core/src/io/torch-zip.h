/* Minimal reader for the zip archives torch.save writes (private).
 *
 * Hand-written on purpose: libzip and minizip hand out entry contents
 * through their own read calls (copies), never the offset of a stored
 * entry inside the file, and torch checkpoints must be mapped, not copied.
 * Only what torch writes is accepted: stored (uncompressed), unencrypted
 * entries, with or without ZIP64. Entries are found through the central
 * directory (torch's local headers have zero sizes), and every offset and
 * size is checked against the archive. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  const char *name;        /* NUL-terminated copy, owned by the DdimZip */
  guint64     offset;      /* of the entry's data in the archive */
  guint64     size;
} DdimZipEntry;

typedef struct _DdimZip DdimZip;

/* Reads the directory of the archive @data (borrowed; must outlive the
 * DdimZip). DDIM_ERROR_FORMAT for anything malformed, DDIM_ERROR_UNSUPPORTED
 * for compressed or encrypted entries. */
DdimZip *ddim_zip_open (const guint8 *data, gsize length, GError **error);
void     ddim_zip_free (DdimZip *zip);

guint               ddim_zip_get_n_entries (DdimZip *zip);
const DdimZipEntry *ddim_zip_get_entry (DdimZip *zip, guint index);
/* NULL if there is no entry of that exact name. */
const DdimZipEntry *ddim_zip_lookup (DdimZip *zip, const char *name);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimZip, ddim_zip_free)

G_END_DECLS
