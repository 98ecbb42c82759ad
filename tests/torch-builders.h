/* Builders for torch.save files in memory (pickles, zip archives, legacy
 * files), shared by test-torch-file.c and the fuzzing seed generator
 * (tests/fuzz/make-seeds.c). Test-only: G_GNUC_UNUSED static functions in a header. */
#pragma once

#include <glib.h>
#include <string.h>

/* ------------------------------------------------------ pickle builder */

typedef GByteArray Pk;

G_GNUC_UNUSED static void
pk_byte (Pk *pk, guint8 b)
{
  g_byte_array_append (pk, &b, 1);
}

G_GNUC_UNUSED static void
pk_raw (Pk *pk, const void *data, gsize len)
{
  g_byte_array_append (pk, data, (guint) len);
}

G_GNUC_UNUSED static void
pk_le (Pk *pk, guint64 v, guint n)
{
  for (guint i = 0; i < n; i++)
    pk_byte (pk, (guint8) (v >> (8 * i)));
}

G_GNUC_UNUSED static void
pk_str (Pk *pk, const char *s)
{
  pk_byte (pk, 'X');
  pk_le (pk, strlen (s), 4);
  pk_raw (pk, s, strlen (s));
}

G_GNUC_UNUSED static void
pk_int (Pk *pk, gint64 v)
{
  if (v >= 0 && v < 256)
    pk_byte (pk, 'K'), pk_le (pk, (guint64) v, 1);
  else if (v >= 0 && v < 65536)
    pk_byte (pk, 'M'), pk_le (pk, (guint64) v, 2);
  else if (v >= G_MININT32 && v <= G_MAXINT32)
    pk_byte (pk, 'J'), pk_le (pk, (guint64) v, 4);
  else
    pk_byte (pk, 0x8a), pk_byte (pk, 8), pk_le (pk, (guint64) v, 8);
}

G_GNUC_UNUSED static void
pk_global (Pk *pk, const char *module, const char *name)
{
  pk_byte (pk, 'c');
  pk_raw (pk, module, strlen (module));
  pk_byte (pk, '\n');
  pk_raw (pk, name, strlen (name));
  pk_byte (pk, '\n');
}

G_GNUC_UNUSED static void
pk_int_tuple (Pk *pk, int n, const gint64 *v)
{
  pk_byte (pk, '(');
  for (int i = 0; i < n; i++)
    pk_int (pk, v[i]);
  pk_byte (pk, 't');
}

typedef struct {
  const char *name;
  const char *stype;     /* "FloatStorage"... */
  const char *key;
  gint64      numel;     /* of the storage */
  gint64      offset;
  int         ndim;
  gint64      size[4];
  gint64      stride[4];
  gboolean    parameter; /* wrap in _rebuild_parameter */
} TSpec;

/* ('storage', torch.<stype>, key, 'cpu', numel[, None]) BINPERSID */
G_GNUC_UNUSED static void
pk_pid (Pk *pk, const char *stype, const char *key, gint64 numel, gboolean legacy)
{
  pk_byte (pk, '(');
  pk_str (pk, "storage");
  pk_global (pk, "torch", stype);
  pk_str (pk, key);
  pk_str (pk, "cpu");
  pk_int (pk, numel);
  if (legacy)
    pk_byte (pk, 'N');
  pk_byte (pk, 't');
  pk_byte (pk, 'Q');
}

G_GNUC_UNUSED static void
pk_tensor (Pk *pk, const TSpec *t, gboolean legacy)
{
  if (t->parameter)
    pk_global (pk, "torch._utils", "_rebuild_parameter");
  pk_global (pk, "torch._utils", "_rebuild_tensor_v2");
  pk_byte (pk, '(');
  pk_pid (pk, t->stype, t->key, t->numel, legacy);
  pk_int (pk, t->offset);
  pk_int_tuple (pk, t->ndim, t->size);
  pk_int_tuple (pk, t->ndim, t->stride);
  pk_byte (pk, 0x89);
  pk_global (pk, "collections", "OrderedDict");
  pk_byte (pk, ')');
  pk_byte (pk, 'R');
  pk_byte (pk, 't');
  pk_byte (pk, 'R');
  if (t->parameter)
    {
      pk_byte (pk, 0x88);
      pk_global (pk, "collections", "OrderedDict");
      pk_byte (pk, ')');
      pk_byte (pk, 'R');
      pk_byte (pk, 0x87);
      pk_byte (pk, 'R');
    }
}

/* An OrderedDict state dict (as model.state_dict() pickles it, with the
 * _metadata BUILD) left on the stack. */
G_GNUC_UNUSED static void
pk_state_dict (Pk *pk, const TSpec *specs, int n, gboolean legacy)
{
  pk_global (pk, "collections", "OrderedDict");
  pk_byte (pk, ')');
  pk_byte (pk, 'R');
  pk_byte (pk, '(');
  for (int i = 0; i < n; i++)
    {
      pk_str (pk, specs[i].name);
      pk_tensor (pk, &specs[i], legacy);
    }
  pk_byte (pk, 'u');
  /* BUILD state {'_metadata': {'': {'version': 1}}} */
  pk_byte (pk, '}');
  pk_str (pk, "_metadata");
  pk_byte (pk, '}');
  pk_str (pk, "");
  pk_byte (pk, '}');
  pk_str (pk, "version");
  pk_int (pk, 1);
  pk_byte (pk, 's');
  pk_byte (pk, 's');
  pk_byte (pk, 's');
  pk_byte (pk, 'b');
}

G_GNUC_UNUSED static Pk *
pk_new (void)
{
  Pk *pk = g_byte_array_new ();
  pk_byte (pk, 0x80);
  pk_byte (pk, 2);
  return pk;
}

G_GNUC_UNUSED static GBytes *
pk_finish (Pk *pk)
{
  pk_byte (pk, '.');
  return g_byte_array_free_to_bytes (pk);
}

/* --------------------------------------------------------- zip builder */

typedef struct {
  const char *name;
  GBytes     *data;
  guint16     method;
} ZEntry;

typedef struct {
  gboolean zip64;        /* ZIP64 end records and extra fields, as torch writes */
  gboolean align;        /* pad local extras so data starts on 64 bytes */
} ZipStyle;

G_GNUC_UNUSED static GBytes *
make_zip (const ZEntry *entries, int n, ZipStyle style)
{
  Pk *z = g_byte_array_new ();
  g_autofree guint64 *offsets = g_new (guint64, n);
  for (int i = 0; i < n; i++)
    {
      gsize size = g_bytes_get_size (entries[i].data);
      gsize name_len = strlen (entries[i].name);
      offsets[i] = z->len;
      gsize extra = 0;
      if (style.align)
        {
          gsize start = z->len + 30 + name_len + 4;
          extra = 4 + (64 - start % 64) % 64;
        }
      pk_le (z, 0x04034b50, 4);
      pk_le (z, 45, 2);
      pk_le (z, 0x0808, 2);
      pk_le (z, entries[i].method, 2);
      pk_le (z, 0, 4);           /* time, date */
      pk_le (z, 0, 4);           /* crc */
      pk_le (z, 0, 4);           /* sizes: zero, as torch's writer */
      pk_le (z, 0, 4);
      pk_le (z, name_len, 2);
      pk_le (z, extra, 2);
      pk_raw (z, entries[i].name, name_len);
      if (extra > 0)
        {
          pk_raw (z, "FB", 2);
          pk_le (z, extra - 4, 2);
          for (gsize k = 0; k < extra - 4; k++)
            pk_byte (z, 'Z');
        }
      pk_raw (z, g_bytes_get_data (entries[i].data, NULL), size);
    }
  guint64 cd_offset = z->len;
  for (int i = 0; i < n; i++)
    {
      gsize size = g_bytes_get_size (entries[i].data);
      gsize name_len = strlen (entries[i].name);
      pk_le (z, 0x02014b50, 4);
      pk_le (z, 45, 2);
      pk_le (z, 45, 2);
      pk_le (z, 0x0808, 2);
      pk_le (z, entries[i].method, 2);
      pk_le (z, 0, 4);
      pk_le (z, 0, 4);
      pk_le (z, style.zip64 ? 0xFFFFFFFF : size, 4);
      pk_le (z, style.zip64 ? 0xFFFFFFFF : size, 4);
      pk_le (z, name_len, 2);
      pk_le (z, style.zip64 ? 28 : 0, 2);
      pk_le (z, 0, 2);          /* comment */
      pk_le (z, 0, 2);          /* disk */
      pk_le (z, 0, 2);
      pk_le (z, 0, 4);
      pk_le (z, style.zip64 ? 0xFFFFFFFF : offsets[i], 4);
      pk_raw (z, entries[i].name, name_len);
      if (style.zip64)
        {
          pk_le (z, 1, 2);
          pk_le (z, 24, 2);
          pk_le (z, size, 8);
          pk_le (z, size, 8);
          pk_le (z, offsets[i], 8);
        }
    }
  guint64 cd_size = z->len - cd_offset;
  if (style.zip64)
    {
      guint64 eocd64 = z->len;
      pk_le (z, 0x06064b50, 4);
      pk_le (z, 44, 8);
      pk_le (z, 45, 2);
      pk_le (z, 45, 2);
      pk_le (z, 0, 4);
      pk_le (z, 0, 4);
      pk_le (z, n, 8);
      pk_le (z, n, 8);
      pk_le (z, cd_size, 8);
      pk_le (z, cd_offset, 8);
      pk_le (z, 0x07064b50, 4);
      pk_le (z, 0, 4);
      pk_le (z, eocd64, 8);
      pk_le (z, 1, 4);
    }
  pk_le (z, 0x06054b50, 4);
  pk_le (z, 0, 2);
  pk_le (z, 0, 2);
  pk_le (z, style.zip64 ? 0xFFFF : n, 2);
  pk_le (z, style.zip64 ? 0xFFFF : n, 2);
  pk_le (z, style.zip64 ? 0xFFFFFFFF : cd_size, 4);
  pk_le (z, style.zip64 ? 0xFFFFFFFF : cd_offset, 4);
  pk_le (z, 0, 2);
  return g_byte_array_free_to_bytes (z);
}

G_GNUC_UNUSED static GBytes *
float_bytes (int n, float first)
{
  g_autofree float *v = g_new (float, n);
  for (int i = 0; i < n; i++)
    v[i] = first + (float) i;
  return g_bytes_new (v, n * sizeof (float));
}

/* A torch zip: <dir>data.pkl, <dir>version and storages data/0 (and
 * data/1) of @n0 (@n1) floats counting up from 0 (from 1000). */
G_GNUC_UNUSED static GBytes *
make_torch_zip_in (const char *dir, GBytes *pkl, int n0, int n1, ZipStyle style)
{
  g_autofree char *pkl_name = g_strconcat (dir, "data.pkl", NULL);
  g_autofree char *d0 = g_strconcat (dir, "data/0", NULL);
  g_autofree char *d1 = g_strconcat (dir, "data/1", NULL);
  g_autofree char *ver = g_strconcat (dir, "version", NULL);
  g_autoptr (GBytes) b0 = float_bytes (n0, 0);
  g_autoptr (GBytes) b1 = float_bytes (n1, 1000);
  g_autoptr (GBytes) v = g_bytes_new_static ("3\n", 2);
  ZEntry e[] = { { pkl_name, pkl, 0 }, { d0, b0, 0 }, { d1, b1, 0 }, { ver, v, 0 } };
  return make_zip (e, G_N_ELEMENTS (e), style);
}

G_GNUC_UNUSED static GBytes *
make_torch_zip (GBytes *pkl, int n0, int n1)
{
  return make_torch_zip_in ("archive/", pkl, n0, n1, (ZipStyle) { TRUE, TRUE });
}

/* A legacy file: magic, protocol, sys_info, @object, @keys, then the
 * storages (@n floats each, from 0, 1000, ...). */
G_GNUC_UNUSED static GBytes *
make_legacy (GBytes *object, const char *const *keys, int n_keys, const gint64 *numels,
             guint64 protocol)
{
  Pk *f = g_byte_array_new ();
  pk_raw (f, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e", 15);
  Pk *p = pk_new ();
  pk_int (p, (gint64) protocol);
  g_autoptr (GBytes) pb = pk_finish (p);
  pk_raw (f, g_bytes_get_data (pb, NULL), g_bytes_get_size (pb));
  p = pk_new ();
  pk_byte (p, '}');
  pk_str (p, "protocol_version");
  pk_int (p, 1001);
  pk_byte (p, 's');
  pk_str (p, "little_endian");
  pk_byte (p, 0x88);
  pk_byte (p, 's');
  g_autoptr (GBytes) sb = pk_finish (p);
  pk_raw (f, g_bytes_get_data (sb, NULL), g_bytes_get_size (sb));
  pk_raw (f, g_bytes_get_data (object, NULL), g_bytes_get_size (object));
  p = pk_new ();
  pk_byte (p, ']');
  pk_byte (p, '(');
  for (int i = 0; i < n_keys; i++)
    pk_str (p, keys[i]);
  pk_byte (p, 'e');
  g_autoptr (GBytes) kb = pk_finish (p);
  pk_raw (f, g_bytes_get_data (kb, NULL), g_bytes_get_size (kb));
  for (int i = 0; i < n_keys; i++)
    {
      pk_le (f, (guint64) numels[i], 8);
      for (gint64 k = 0; k < numels[i]; k++)
        {
          float x = 1000.0f * (float) i + (float) k;
          pk_raw (f, &x, 4);
        }
    }
  return g_byte_array_free_to_bytes (f);
}

G_GNUC_UNUSED static const TSpec two_tensors[] = {
  { "a.weight", "FloatStorage", "0", 16, 0, 2, { 2, 3 }, { 3, 1 }, FALSE },
  { "b.bias", "FloatStorage", "1", 16, 4, 1, { 5 }, { 1 }, TRUE },
};

G_GNUC_UNUSED static GBytes *
two_tensor_pickle (void)
{
  Pk *pk = pk_new ();
  pk_state_dict (pk, two_tensors, 2, FALSE);
  return pk_finish (pk);
}

/* A list [model (module. keys), optimizer junk, epoch, step, ema]. */
G_GNUC_UNUSED static GBytes *
ermongroup_list (gboolean with_ema)
{
  const TSpec model[] = { { "module.w", "FloatStorage", "0", 16, 0, 1, { 4 }, { 1 }, FALSE } };
  const TSpec ema[] = { { "w", "FloatStorage", "1", 16, 0, 1, { 4 }, { 1 }, FALSE } };
  Pk *pk = pk_new ();
  pk_byte (pk, ']');
  pk_byte (pk, '(');
  pk_state_dict (pk, model, 1, FALSE);
  /* optimizer: {'state': {0: {'step': 7, 'exp_avg': b'..'}}, 'param_groups': [{'lr': 2e-4}]} */
  pk_byte (pk, '}');
  pk_str (pk, "state");
  pk_byte (pk, '}');
  pk_int (pk, 0);
  pk_byte (pk, '}');
  pk_str (pk, "blob");
  pk_global (pk, "_codecs", "encode");
  pk_str (pk, "\xc3\xbf");
  pk_str (pk, "latin1");
  pk_byte (pk, 0x86);
  pk_byte (pk, 'R');
  pk_byte (pk, 's');
  pk_byte (pk, 's');
  pk_byte (pk, 's');
  pk_str (pk, "param_groups");
  pk_byte (pk, ']');
  pk_byte (pk, '}');
  pk_str (pk, "lr");
  pk_byte (pk, 'G');
  pk_raw (pk, "\x3f\x2a\x36\xe2\xeb\x1c\x43\x2d", 8);
  pk_byte (pk, 's');
  pk_byte (pk, 'a');
  pk_byte (pk, 's');
  pk_int (pk, 7);
  pk_int (pk, 12345);
  if (with_ema)
    pk_state_dict (pk, ema, 1, FALSE);
  pk_byte (pk, 'e');
  return pk_finish (pk);
}

