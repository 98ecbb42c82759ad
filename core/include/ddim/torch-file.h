/* Reading PyTorch `torch.save` files (state dicts) without executing them.
 *
 * Both serialisations are read: the zip format (torch >= 1.6: stored
 * entries, ZIP64, records found through the central directory under any
 * archive prefix) and the legacy format (five pickles, then the raw
 * storages). The pickles are read by a restricted unpickler that implements
 * only the opcodes torch state dicts use and resolves GLOBAL against a
 * closed allow-list (OrderedDict, the tensor/parameter rebuild functions,
 * storage types, dtypes); anything else is a DDIM_ERROR_FORMAT or
 * DDIM_ERROR_UNSUPPORTED error naming it, and nothing is ever executed.
 *
 * The file is mapped read-only: contiguous tensors point into the mapping
 * (no copy); non-contiguous views are gathered into buffers the
 * DdimTorchFile owns. Every size, offset, stride and count is checked
 * against the file before it is used. */
#pragma once

#include <glib.h>

#include "ddim/safetensors.h"   /* DdimTensorInfo, DdimDtype */

G_BEGIN_DECLS

typedef enum {
  DDIM_TORCH_FORMAT_ZIP,        /* torch >= 1.6 */
  DDIM_TORCH_FORMAT_LEGACY      /* torch < 1.6, or _use_new_zipfile_serialization=False */
} DdimTorchFormat;

/* Which state dict to take from a container that holds several.
 *
 * Unwrapping, at most 4 levels deep: a dict (plain or OrderedDict) with at
 * least one tensor value is the state dict (whatever other keys it has);
 * a dict without tensor values is entered under the first of its keys,
 * in the order below, whose value is a dict, list or tuple; a list or
 * tuple is entered at the element below. Anything else is a
 * DDIM_ERROR_FORMAT "no state dict found" error. */
typedef enum {
  /* lists: the last element if it is a dict with tensor values (the EMA
   * of ermongroup's training list [model, optimizer, epoch, step, ema]),
   * else element 0 (a run saved without EMA); dict keys "ema",
   * "state_dict", "model" */
  DDIM_TORCH_SELECT_EMA,
  /* the model's own weights: lists: element 0; dict keys "state_dict",
   * "model", "ema" */
  DDIM_TORCH_SELECT_MODEL
} DdimTorchSelect;

typedef struct _DdimTorchFile DdimTorchFile;

/* Opens @path, reads the pickled object, unwraps the container (see
 * DdimTorchSelect; one leading "module." is stripped from every key) and
 * keeps the tensors: F32, F16 and BF16 as stored; F64 converted to F32
 * (the entry then says F32); integer/bool tensors, non-string keys and
 * non-tensor values are dropped; two tensors with one name (after
 * stripping) are an error, and so is a state dict without any kept tensor.
 * Zero-element tensors are kept (n_bytes 0). Errors: DDIM_ERROR_IO (cannot read),
 * DDIM_ERROR_FORMAT (malformed, truncated, hostile: the message says what
 * and where), DDIM_ERROR_UNSUPPORTED (TorchScript archive, a dtype or
 * global that state dicts do not use). */
DdimTorchFile *ddim_torch_file_open (const char *path, DdimTorchSelect select, GError **error);
/* Same from memory (takes a reference on @bytes); for tests and fuzzing. */
DdimTorchFile *ddim_torch_file_new_from_bytes (GBytes *bytes, DdimTorchSelect select,
                                               GError **error);
void           ddim_torch_file_free (DdimTorchFile *file);

DdimTorchFormat ddim_torch_file_get_format (DdimTorchFile *file);
/* Tensors in the order the state dict lists them. Entries are borrowed from
 * @file and stay valid until it is freed; their data is little-endian and
 * unaligned: contiguous F32/F16/BF16 tensors point into the file's
 * mapping (several may share bytes), non-contiguous views and F64 tensors
 * point to row-major copies @file owns (never more copied bytes in all
 * than the file has). */
guint                 ddim_torch_file_get_n_tensors (DdimTorchFile *file);
const DdimTensorInfo *ddim_torch_file_get_info_nth (DdimTorchFile *file, guint index);
/* NULL if there is no tensor of that name (after unwrapping). */
const DdimTensorInfo *ddim_torch_file_lookup (DdimTorchFile *file, const char *name);

/* TRUE if the first bytes of @data look like a torch.save file of either
 * format (used to tell a checkpoint from other files in a folder). */
gboolean ddim_torch_file_sniff (const guint8 *data, gsize length);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimTorchFile, ddim_torch_file_free)

G_END_DECLS
