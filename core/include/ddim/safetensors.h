/* Reading and writing the safetensors format
 * (https://github.com/huggingface/safetensors): an 8-byte little-endian header
 * length N, N bytes of JSON, then the raw little-endian tensor data.
 *
 * The reader validates the whole header before anything is used: the header
 * size limit (100,000,000 bytes), known dtypes, shapes whose element count
 * times dtype size equals the byte range, ranges that are contiguous, in
 * order, without holes or overlaps, starting at 0, and a data section whose
 * end is exactly the file end. Any violation is a DDIM_ERROR_FORMAT error
 * naming the tensor and the byte positions. */
#pragma once

#include <glib.h>
#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
  DDIM_DTYPE_F32,
  DDIM_DTYPE_F16,
  DDIM_DTYPE_BF16,
  DDIM_DTYPE_F64,
  DDIM_DTYPE_I64,
  DDIM_DTYPE_I32,
  DDIM_DTYPE_I16,
  DDIM_DTYPE_I8,
  DDIM_DTYPE_U8,
  DDIM_DTYPE_BOOL
} DdimDtype;

#define DDIM_MAX_DIMS 8

/* A tensor's entry in the header. Borrowed from the DdimSafetensors. */
typedef struct {
  const char *name;
  DdimDtype   dtype;
  int         ndim;
  gint64      shape[DDIM_MAX_DIMS];
  gint64      n_elements;
  const guint8 *data;     /* raw little-endian bytes, unaligned */
  gsize       n_bytes;
} DdimTensorInfo;

typedef struct _DdimSafetensors DdimSafetensors;

/* Opens and validates a file (mapped read-only, not copied). */
DdimSafetensors *ddim_safetensors_open (const char *path, GError **error);
/* Validates an in-memory file; takes a reference on @bytes. */
DdimSafetensors *ddim_safetensors_new_from_bytes (GBytes *bytes, GError **error);
void             ddim_safetensors_free (DdimSafetensors *st);

/* Number of tensors and their entries, in file (offset) order. */
guint                 ddim_safetensors_get_n_tensors (DdimSafetensors *st);
const DdimTensorInfo *ddim_safetensors_get_info_nth (DdimSafetensors *st, guint index);
/* NULL if there is no tensor of that name. */
const DdimTensorInfo *ddim_safetensors_lookup (DdimSafetensors *st, const char *name);
/* `__metadata__` value for @key, or NULL. Borrowed. */
const char *ddim_safetensors_get_metadata (DdimSafetensors *st, const char *key);
/* The whole file (borrowed). */
GBytes     *ddim_safetensors_get_bytes (DdimSafetensors *st);

/* Copies tensor @name converted to float32 (F32, F16, BF16, F64, I64, I32
 * accepted) into a new buffer of info->n_elements floats (g_free). Errors if
 * the tensor is missing (DDIM_ERROR_MISMATCH, "missing tensor 'name'"), or if
 * @expected_shape is non-NULL and differs (DDIM_ERROR_MISMATCH, message with
 * both shapes), or if the dtype cannot be converted (DDIM_ERROR_UNSUPPORTED). */
float *ddim_safetensors_read_f32 (DdimSafetensors *st, const char *name,
                                  int expected_ndim, const gint64 *expected_shape,
                                  GError **error);
/* Same, from an entry. Writes info->n_elements floats to @dst. */
gboolean ddim_tensor_info_to_f32 (const DdimTensorInfo *info, float *dst, GError **error);

const char *ddim_dtype_name (DdimDtype dtype);
gsize       ddim_dtype_size (DdimDtype dtype);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimSafetensors, ddim_safetensors_free)

/* Writer: collects F32 tensors and string metadata, then serialises. */
typedef struct _DdimSafetensorsWriter DdimSafetensorsWriter;

DdimSafetensorsWriter *ddim_safetensors_writer_new (void);
void ddim_safetensors_writer_free (DdimSafetensorsWriter *w);
/* Copies @data (n_elements = product of shape floats). */
void ddim_safetensors_writer_add_f32 (DdimSafetensorsWriter *w, const char *name,
                                      int ndim, const gint64 *shape, const float *data);
/* Stores F16 (round to nearest even) converted from float data. */
void ddim_safetensors_writer_add_f16 (DdimSafetensorsWriter *w, const char *name,
                                      int ndim, const gint64 *shape, const float *data);
void ddim_safetensors_writer_add_metadata (DdimSafetensorsWriter *w, const char *key,
                                           const char *value);
/* Serialised file contents; tensors in the order added, header padded with
 * spaces to a multiple of 8 bytes as the reference implementation does. */
GBytes  *ddim_safetensors_writer_to_bytes (DdimSafetensorsWriter *w);
/* Writes atomically (temporary file in the same folder, then rename), so a
 * failure never leaves a half-written file. */
gboolean ddim_safetensors_writer_save (DdimSafetensorsWriter *w, const char *path,
                                       GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimSafetensorsWriter, ddim_safetensors_writer_free)

/* Half-precision conversions (IEEE binary16 and bfloat16). */
float   ddim_f16_to_f32 (guint16 h);
guint16 ddim_f32_to_f16 (float f);
float   ddim_bf16_to_f32 (guint16 h);

G_END_DECLS
