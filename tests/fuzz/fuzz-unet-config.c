/* Fuzzes the diffusers config.json parser (ddim_unet_config_parse). */
#include "fuzz-common.h"
#include "ddim/config.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  DdimUNetConfig config;
  g_autoptr (GError) error = NULL;
  gboolean ok = ddim_unet_config_parse ((const char *) data, (gssize) size, &config, &error);
  fuzz_check_result (ok, error);
  if (ok)
    g_free (ddim_unet_config_to_json (&config));
  return 0;
}
