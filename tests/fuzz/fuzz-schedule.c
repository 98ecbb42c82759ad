/* Fuzzes the scheduler config parser (core/src/diffusion/schedule.c). */
#include "fuzz-common.h"
#include "ddim/schedule.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSchedule) s = ddim_schedule_parse ((const char *) data, (gssize) size, &error);
  fuzz_check_result (s != NULL, error);
  return 0;
}
