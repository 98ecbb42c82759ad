/* Shared by the libFuzzer harnesses: each defines LLVMFuzzerTestOneInput,
 * feeds the input to one parser and checks the error contract (a failure
 * always comes with a DDIM_ERROR). Crashes, leaks, out-of-bounds reads
 * and undefined behaviour are found by ASan/UBSan. */
#pragma once

#include <glib.h>
#include <stdint.h>
#include <stdlib.h>

#include "ddim/error.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Aborts (a finding) unless @ok or a DDIM_ERROR was set. */
static inline void
fuzz_check_result (gboolean ok, GError *error)
{
  if (ok ? error != NULL : (error == NULL || error->domain != DDIM_ERROR
                            || error->message == NULL || error->message[0] == '\0'))
    abort ();
}

/* Reads the first and last byte of a range so ASan sees bad pointers. */
static inline void
fuzz_touch (const guint8 *p, gsize n)
{
  if (n > 0)
    {
      volatile guint8 sink = p[0];
      sink = p[n - 1];
      (void) sink;
    }
}
