/* Fuzzes the legacy (pre-1.6) torch.save reader: inputs without the
 * legacy magic get it prepended, so mutations explore what follows it. */
#include "fuzz-common.h"
#include "ddim/torch-file.h"
#include "io/torch-legacy.h"

#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (GBytes) bytes = NULL;
  if (size >= DDIM_TORCH_LEGACY_MAGIC_LEN
      && memcmp (data, DDIM_TORCH_LEGACY_MAGIC, DDIM_TORCH_LEGACY_MAGIC_LEN) == 0)
    bytes = g_bytes_new (data, size);
  else
    {
      guint8 *copy = g_malloc (size + DDIM_TORCH_LEGACY_MAGIC_LEN);
      memcpy (copy, DDIM_TORCH_LEGACY_MAGIC, DDIM_TORCH_LEGACY_MAGIC_LEN);
      memcpy (copy + DDIM_TORCH_LEGACY_MAGIC_LEN, data, size);
      bytes = g_bytes_new_take (copy, size + DDIM_TORCH_LEGACY_MAGIC_LEN);
    }
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimTorchFile) tf = ddim_torch_file_new_from_bytes (bytes, DDIM_TORCH_SELECT_EMA,
                                                                 &error);
  fuzz_check_result (tf != NULL, error);
  for (guint i = 0; tf != NULL && i < ddim_torch_file_get_n_tensors (tf); i++)
    {
      const DdimTensorInfo *info = ddim_torch_file_get_info_nth (tf, i);
      fuzz_touch (info->data, info->n_bytes);
    }
  return 0;
}
