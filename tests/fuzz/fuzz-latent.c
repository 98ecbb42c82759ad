/* Fuzzes the latent file reader (core/src/diffusion/latent.c); the GIMP
 * parasite holds the same bytes. */
#include "fuzz-common.h"
#include "ddim/latent.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (GBytes) bytes = g_bytes_new_static (data, size);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimLatent) latent = ddim_latent_new_from_bytes (bytes, NULL, &error);
  fuzz_check_result (latent != NULL, error);
  return 0;
}
