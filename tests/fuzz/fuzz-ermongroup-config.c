/* Fuzzes the ermongroup config.yml parser (ddim_ermongroup_config_parse,
 * libyaml underneath) and the config.json writer on what it accepts. */
#include "fuzz-common.h"
#include "ddim/model.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  DdimUNetConfig config;
  DdimSchedule *schedule = NULL;
  gboolean ema = FALSE;
  g_autoptr (GError) error = NULL;
  gboolean ok = ddim_ermongroup_config_parse ((const char *) data, size, &config, &schedule,
                                              &ema, &error);
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
