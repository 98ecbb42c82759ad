/* Fuzzes the restricted unpickler in both persistent-id flavours. */
#include "fuzz-common.h"
#include "io/torch-pickle.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  for (int flavour = 0; flavour < 2; flavour++)
    {
      g_autoptr (GError) error = NULL;
      gsize consumed = 0;
      g_autoptr (DdimPickle) pickle = ddim_pickle_load (data, size, flavour, "fuzz", &consumed,
                                                        &error);
      fuzz_check_result (pickle != NULL, error);
      if (pickle != NULL && (consumed > size || ddim_pickle_get_root (pickle) == NULL))
        abort ();
    }
  return 0;
}
