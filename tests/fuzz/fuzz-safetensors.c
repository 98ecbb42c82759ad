/* Fuzzes the safetensors header reader (core/src/io/safetensors.c). */
#include "fuzz-common.h"
#include "ddim/safetensors.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (GBytes) bytes = g_bytes_new_static (data, size);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &error);
  fuzz_check_result (st != NULL, error);
  for (guint i = 0; st != NULL && i < ddim_safetensors_get_n_tensors (st); i++)
    {
      const DdimTensorInfo *info = ddim_safetensors_get_info_nth (st, i);
      fuzz_touch (info->data, info->n_bytes);
      if (info->n_elements <= 4096)
        {
          g_autofree float *f = g_new (float, MAX (info->n_elements, 1));
          g_autoptr (GError) conv = NULL;
          fuzz_check_result (ddim_tensor_info_to_f32 (info, f, &conv), conv);
        }
    }
  return 0;
}
