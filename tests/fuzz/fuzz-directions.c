/* Fuzzes the directions file reader (core/src/edit/directions.c). */
#include "fuzz-common.h"
#include "ddim/directions.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (GBytes) bytes = g_bytes_new_static (data, size);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new_from_bytes (bytes, &error);
  fuzz_check_result (set != NULL, error);
  return 0;
}
