/* libddim error domain. Every user-facing failure is a GError in DDIM_ERROR
 * with one of these codes and a message a user can act on. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define DDIM_ERROR (ddim_error_quark ())

typedef enum {
  DDIM_ERROR_IO,           /* a file could not be read or written */
  DDIM_ERROR_FORMAT,       /* a file is malformed (safetensors, JSON, image, latent) */
  DDIM_ERROR_UNSUPPORTED,  /* a valid value this library does not support */
  DDIM_ERROR_MISMATCH,     /* shapes, tensors or models that do not fit together */
  DDIM_ERROR_INVALID,      /* a bad argument value from the user (steps, sizes, ...) */
  DDIM_ERROR_CANCELLED     /* the caller's GCancellable fired */
} DdimErrorCode;

GQuark ddim_error_quark (void);

G_END_DECLS
