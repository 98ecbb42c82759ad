/* Fuzzes the guided-diffusion model_flags.txt parser (ddim_adm_flags_parse)
 * and the config.json writer on what it accepts. */
#include "fuzz-common.h"
#include "ddim/model.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  DdimUNetConfig config;
  DdimSchedule *schedule = NULL;
  gboolean new_order = FALSE;
  g_autoptr (GError) error = NULL;
  gboolean ok = ddim_adm_flags_parse ((const char *) data, size, &config, &schedule, &new_order,
                                      &error);
  fuzz_check_result (ok, error);
  if (ok != (schedule != NULL))
    abort ();
  if (ok)
    {
      g_free (ddim_unet_config_to_json (&config));
      g_free (ddim_schedule_to_json (schedule));
      ddim_schedule_free (schedule);
    }
  return 0;
}
