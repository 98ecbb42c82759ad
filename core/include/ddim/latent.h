/* The latent file: one format for the CLI and the GIMP parasite. A
 * safetensors file with tensor "latent" [1, C, H, W] F32 (and, for methods
 * whose latent is a pair of states, "latent_pair") plus string metadata:
 *   format        "ddim-latent/1"
 *   model_sha256  SHA-256 of the weights file the latent was made with
 *   steps, spacing, method, eps_at, image_width, image_height, resize
 * and the parameters a method's decoder needs: "edict_p" for method "edict"
 * and "bdia_gamma" for "bdia" (both methods also need "latent_pair"; see
 * ddim/exact.h). A reader rejects a newer format and a latent made for
 * another model. */
#pragma once

#include <glib.h>

#include "ddim/sampler.h"
#include "ddim/schedule.h"

G_BEGIN_DECLS

#define DDIM_LATENT_FORMAT "ddim-latent/1"
#define DDIM_LATENT_FORMAT_VERSION 1

typedef struct {
  int         channels, height, width;   /* of the latent (batch 1) */
  float      *latent;                    /* channels*height*width, owned */
  float      *latent_pair;               /* second state, or NULL */
  char       *model_sha256;
  int         steps;
  DdimSpacing spacing;
  char       *method;                    /* "ddim", ... */
  DdimEpsAt   eps_at;
  int         image_width, image_height; /* the source image's own size */
  char       *resize;                    /* "fit" (resized to the model size) or "native" */
  double      edict_p;                   /* method "edict": mixing weight; else 0 */
  double      bdia_gamma;                /* method "bdia": gamma; else 0 */
} DdimLatent;

DdimLatent *ddim_latent_new (int channels, int height, int width);
void        ddim_latent_free (DdimLatent *latent);

GBytes     *ddim_latent_to_bytes (const DdimLatent *latent);
/* Atomic (temporary file, then rename). */
gboolean    ddim_latent_save (const DdimLatent *latent, const char *path, GError **error);

/* When @expected_sha256 is not NULL, a latent of another model is a
 * DDIM_ERROR_MISMATCH error. A newer format is DDIM_ERROR_UNSUPPORTED;
 * anything malformed DDIM_ERROR_FORMAT, including an "edict" or "bdia"
 * latent without "latent_pair" or without a valid parameter (in (0, 1]). */
DdimLatent *ddim_latent_new_from_bytes (GBytes *bytes, const char *expected_sha256,
                                        GError **error);
DdimLatent *ddim_latent_load (const char *path, const char *expected_sha256, GError **error);

const char *ddim_eps_at_to_string (DdimEpsAt eps_at);
gboolean    ddim_eps_at_from_string (const char *s, DdimEpsAt *eps_at, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimLatent, ddim_latent_free)

G_END_DECLS
