/* Fuzzes the zip directory reader and the whole torch.save reader on
 * zip inputs. */
#include "fuzz-common.h"
#include "ddim/torch-file.h"
#include "io/torch-zip.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimZip) zip = ddim_zip_open (data, size, &error);
  fuzz_check_result (zip != NULL, error);
  if (zip != NULL)
    for (guint i = 0; i < ddim_zip_get_n_entries (zip); i++)
      {
        const DdimZipEntry *e = ddim_zip_get_entry (zip, i);
        if (ddim_zip_lookup (zip, e->name) == NULL)
          abort ();
        fuzz_touch (data + e->offset, e->size);
      }
  g_clear_error (&error);
  g_autoptr (GBytes) bytes = g_bytes_new_static (data, size);
  for (int select = 0; select < 2; select++)
    {
      g_autoptr (DdimTorchFile) tf = ddim_torch_file_new_from_bytes (bytes, select, &error);
      fuzz_check_result (tf != NULL, error);
      g_clear_error (&error);
      for (guint i = 0; tf != NULL && i < ddim_torch_file_get_n_tensors (tf); i++)
        {
          const DdimTensorInfo *info = ddim_torch_file_get_info_nth (tf, i);
          fuzz_touch (info->data, info->n_bytes);
          if (ddim_torch_file_lookup (tf, info->name) != info)
            abort ();
        }
    }
  return 0;
}
