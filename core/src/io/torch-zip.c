/* Zip directory reader for torch.save archives; see torch-zip.h.
 * Layout: PKWARE APPNOTE.TXT sections 4.3.7 (local header), 4.3.12
 * (central directory header), 4.3.14-4.3.16 (ZIP64 and classic end of
 * central directory records) and 4.5.3 (ZIP64 extra field). */

#include "io/torch-zip.h"
#include "ddim/error.h"

#include <string.h>

#define SIG_LOCAL   0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD    0x06054b50u
#define SIG_EOCD64  0x06064b50u
#define SIG_LOC64   0x07064b50u
#define EOCD_SIZE    22u
#define LOC64_SIZE   20u
#define EOCD64_SIZE  56u
#define CENTRAL_SIZE 46u
#define LOCAL_SIZE   30u

struct _DdimZip {
  GArray     *entries;   /* DdimZipEntry, names owned */
  GHashTable *by_name;   /* name (borrowed) -> GUINT_TO_POINTER (index + 1) */
};

static guint64
le (const guint8 *p, guint n)
{
  guint64 v = 0;
  for (guint i = 0; i < n; i++)
    v |= (guint64) p[i] << (8 * i);
  return v;
}

static gboolean G_GNUC_PRINTF (2, 3)
fail (GError **error, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  g_autofree char *what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "zip archive: %s", what);
  return FALSE;
}

void
ddim_zip_free (DdimZip *zip)
{
  if (zip == NULL)
    return;
  for (guint i = 0; i < zip->entries->len; i++)
    g_free ((char *) g_array_index (zip->entries, DdimZipEntry, i).name);
  g_array_unref (zip->entries);
  g_hash_table_unref (zip->by_name);
  g_free (zip);
}

/* Finds the classic end record: the last signature from which a record
 * with its comment ends exactly at the end of the archive. */
static gboolean
find_eocd (const guint8 *data, gsize length, gsize *out)
{
  if (length < EOCD_SIZE)
    return FALSE;
  gsize lowest = length - EOCD_SIZE > 0xFFFF ? length - EOCD_SIZE - 0xFFFF : 0;
  for (gsize pos = length - EOCD_SIZE + 1; pos-- > lowest;)
    if (le (data + pos, 4) == SIG_EOCD && pos + EOCD_SIZE + le (data + pos + 20, 2) == length)
      {
        *out = pos;
        return TRUE;
      }
  return FALSE;
}

/* Replaces the 0xFFFFFFFF fields of a central header by their ZIP64 extra
 * values (APPNOTE 4.5.3: in the order usize, csize, offset, only those
 * that overflowed). */
static gboolean
apply_zip64_extra (const guint8 *extra, guint extra_len, guint64 *usize, guint64 *csize,
                   guint64 *offset, const char *name, GError **error)
{
  gboolean need_u = *usize == 0xFFFFFFFFu, need_c = *csize == 0xFFFFFFFFu;
  gboolean need_o = *offset == 0xFFFFFFFFu;
  if (!need_u && !need_c && !need_o)
    return TRUE;
  guint pos = 0;
  while (pos + 4 <= extra_len)
    {
      guint id = (guint) le (extra + pos, 2), len = (guint) le (extra + pos + 2, 2);
      if (pos + 4 + len > extra_len)
        break;
      if (id == 0x0001)
        {
          const guint8 *f = extra + pos + 4;
          guint need = 8u * (need_u + need_c + need_o), at = 0;
          if (len < need)
            return fail (error, "entry '%s': ZIP64 extra field of %u bytes, needs %u", name, len,
                         need);
          if (need_u)
            *usize = le (f + at, 8), at += 8;
          if (need_c)
            *csize = le (f + at, 8), at += 8;
          if (need_o)
            *offset = le (f + at, 8);
          return TRUE;
        }
      pos += 4 + len;
    }
  return fail (error, "entry '%s': sizes need a ZIP64 extra field, which is missing", name);
}

static gboolean
read_entry (DdimZip *zip, const guint8 *data, gsize length, guint64 cd_end, guint64 data_end,
            guint64 *pos, GError **error)
{
  const guint8 *h = data + *pos;
  if (cd_end - *pos < CENTRAL_SIZE || le (h, 4) != SIG_CENTRAL)
    return fail (error, "central directory entry at byte %" G_GUINT64_FORMAT " is malformed",
                 *pos);
  guint flags = (guint) le (h + 8, 2), method = (guint) le (h + 10, 2);
  guint64 csize = le (h + 20, 4), usize = le (h + 24, 4), offset = le (h + 42, 4);
  guint name_len = (guint) le (h + 28, 2), extra_len = (guint) le (h + 30, 2);
  guint comment_len = (guint) le (h + 32, 2);
  guint64 total = (guint64) CENTRAL_SIZE + name_len + extra_len + comment_len;
  if (cd_end - *pos < total)
    return fail (error, "central directory entry at byte %" G_GUINT64_FORMAT
                 " runs past the directory", *pos);
  if (memchr (h + CENTRAL_SIZE, '\0', name_len) != NULL)
    return fail (error, "entry name with a NUL byte");
  g_autofree char *name = g_strndup ((const char *) h + CENTRAL_SIZE, name_len);
  g_autofree char *shown = g_strescape (name, NULL);
  if (!apply_zip64_extra (h + CENTRAL_SIZE + name_len, extra_len, &usize, &csize, &offset, shown,
                          error))
    return FALSE;
  if (flags & 1)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "zip archive: entry '%s' is encrypted", shown);
      return FALSE;
    }
  if (method != 0 || csize != usize)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "zip archive: entry '%s' is compressed (method %u); torch.save stores entries "
                   "uncompressed", shown, method);
      return FALSE;
    }
  if (offset > length || length - offset < LOCAL_SIZE || le (data + offset, 4) != SIG_LOCAL)
    return fail (error, "entry '%s': no local header at byte %" G_GUINT64_FORMAT, shown, offset);
  guint64 start = offset + LOCAL_SIZE + le (data + offset + 26, 2) + le (data + offset + 28, 2);
  if (start > data_end || data_end - start < usize)
    return fail (error, "entry '%s': data (byte %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                 " bytes) runs past the end of the entries (byte %" G_GUINT64_FORMAT ")",
                 shown, start, usize, data_end);
  DdimZipEntry e = { .name = g_steal_pointer (&name), .offset = start, .size = usize };
  g_array_append_val (zip->entries, e);
  if (!g_hash_table_contains (zip->by_name, e.name))
    g_hash_table_insert (zip->by_name, (gpointer) e.name, GUINT_TO_POINTER (zip->entries->len));
  *pos += total;
  return TRUE;
}

DdimZip *
ddim_zip_open (const guint8 *data, gsize length, GError **error)
{
  g_return_val_if_fail (data != NULL || length == 0, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  gsize eocd;
  if (!find_eocd (data, length, &eocd))
    return fail (error, "no end of central directory record (truncated?)"), NULL;
  guint64 n_entries = le (data + eocd + 10, 2);
  guint64 cd_size = le (data + eocd + 12, 4), cd_offset = le (data + eocd + 16, 4);
  guint64 records_end = eocd;   /* where the central directory must end */
  if (eocd >= LOC64_SIZE && le (data + eocd - LOC64_SIZE, 4) == SIG_LOC64)
    {
      guint64 e64 = le (data + eocd - LOC64_SIZE + 8, 8);
      if (e64 > eocd - LOC64_SIZE || eocd - LOC64_SIZE - e64 < EOCD64_SIZE
          || le (data + e64, 4) != SIG_EOCD64)
        return fail (error, "ZIP64 end of central directory record missing at byte %"
                     G_GUINT64_FORMAT, e64), NULL;
      n_entries = le (data + e64 + 32, 8);
      cd_size = le (data + e64 + 40, 8);
      cd_offset = le (data + e64 + 48, 8);
      records_end = e64;
    }
  if (cd_offset > records_end || records_end - cd_offset < cd_size)
    return fail (error, "central directory (byte %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                 " bytes) lies outside the archive", cd_offset, cd_size), NULL;
  if (n_entries > cd_size / CENTRAL_SIZE)
    return fail (error, "%" G_GUINT64_FORMAT " entries cannot fit in a central directory of %"
                 G_GUINT64_FORMAT " bytes", n_entries, cd_size), NULL;

  g_autoptr (DdimZip) zip = g_new0 (DdimZip, 1);
  zip->entries = g_array_new (FALSE, FALSE, sizeof (DdimZipEntry));
  zip->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  guint64 pos = cd_offset;
  for (guint64 i = 0; i < n_entries; i++)
    if (!read_entry (zip, data, length, cd_offset + cd_size, cd_offset, &pos, error))
      return NULL;
  return g_steal_pointer (&zip);
}

guint
ddim_zip_get_n_entries (DdimZip *zip)
{
  g_return_val_if_fail (zip != NULL, 0);
  return zip->entries->len;
}

const DdimZipEntry *
ddim_zip_get_entry (DdimZip *zip, guint index)
{
  g_return_val_if_fail (zip != NULL && index < zip->entries->len, NULL);
  return &g_array_index (zip->entries, DdimZipEntry, index);
}

const DdimZipEntry *
ddim_zip_lookup (DdimZip *zip, const char *name)
{
  g_return_val_if_fail (zip != NULL && name != NULL, NULL);
  guint index = GPOINTER_TO_UINT (g_hash_table_lookup (zip->by_name, name));
  return index == 0 ? NULL : &g_array_index (zip->entries, DdimZipEntry, index - 1);
}
