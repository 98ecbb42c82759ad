/* Semantic directions and their file.
 *
 * A direction is a unit vector that the editor (ddim/edit.h) adds, times a
 * signed strength, either to h, the UNet's mid-block output (space "h",
 * Asyrp-style editing), or to the noisy image x_t at one timestep (space
 * "x", the Jacobian directions of Park et al.). Shapes:
 *   space h: [C_mid, h, w], the model's h-space at one image size, or
 *            [C_mid], "pooled": one value per channel, broadcast over every
 *            position (so it works at any image size; its shift at each
 *            position is strength * d[c]);
 *   space x: [C_in, H, W], the model's input at one image size.
 * A space-h direction may be "per timestep": one such block for each of
 * n sampling timesteps it was fitted at (descending), stored [n, C_mid, h,
 * w] or [n, C_mid]; at a step between two of them the editor interpolates
 * linearly, beyond the ends it holds the end block. Its blocks' norms have
 * a root mean square of 1, so a strength means the same size of shift per
 * step as for a single direction.
 *
 * The directions file: a safetensors file with one F32 tensor per direction,
 * "direction.NAME", and string metadata
 *   format            "ddim-directions/2" when the file holds a per-timestep
 *                     direction, else "ddim-directions/1" (so a reader that
 *                     predates them refuses such a file as a newer format)
 *   direction.NAME    JSON object:
 *     {"description": str, "kind": "supervised"|"unsupervised"|"pca",
 *      "space": "h"|"x", "t_min": int, "t_max": int,
 *      "strength_min": num, "strength_max": num, "sigma": num,
 *      "model_sha256": str, "hspace_shape": [C_mid, h, w],
 *      "method": str (supervised directions, when known),
 *      "timesteps": [t_1, ..., t_n] (per-timestep directions only)}
 * t_min..t_max is the timestep range the direction was fitted on (one
 * timestep for a Jacobian direction); strength_min..max the recommended
 * range; sigma a scale of the data it came from (singular value, standard
 * deviation, or the distance between the class means; 0 if none). A model
 * folder may hold MODEL/directions.safetensors. Writers are atomic. */
#pragma once

#include <glib.h>

#include "ddim/unet.h"

G_BEGIN_DECLS

#define DDIM_DIRECTIONS_FORMAT "ddim-directions/1"
#define DDIM_DIRECTIONS_FORMAT_PER_TIMESTEP "ddim-directions/2"
#define DDIM_DIRECTIONS_FORMAT_VERSION 2
#define DDIM_DIRECTIONS_FILE "directions.safetensors"

typedef enum {
  DDIM_DIRECTION_SUPERVISED,    /* from labelled examples (ddim/fit.h) */
  DDIM_DIRECTION_UNSUPERVISED,  /* Jacobian singular vectors (ddim/discover.h) */
  DDIM_DIRECTION_PCA            /* principal components of h (ddim/discover.h) */
} DdimDirectionKind;

typedef enum {
  DDIM_SPACE_H,   /* added to the mid-block output over the edit interval */
  DDIM_SPACE_X    /* added to x_t once, at the edit timestep */
} DdimDirectionSpace;

typedef struct {
  char              *name;
  char              *description;
  DdimDirectionKind  kind;
  DdimDirectionSpace space;
  int                ndim;                 /* of one block: 3, or 1 (pooled, space h only) */
  int                channels, height, width;  /* height = width = 0 when pooled */
  /* Per timestep (space h): n_timesteps >= 2 blocks, block i for sampling
   * timestep timesteps[i] (strictly descending, owned); 0 and NULL for a
   * single direction. */
  int                n_timesteps;
  int               *timesteps;
  float             *data;                 /* max(1, n_timesteps) blocks of channels * height *
                                            * width (or channels) floats, owned */
  int                t_min, t_max;         /* -1 when unknown */
  double             strength_min, strength_max;
  double             sigma;
  char              *model_sha256;         /* "" when unknown */
  /* How a supervised direction was fitted: "mean-difference", "prototype"
   * or "logistic" (ddim/fit.h); "" when unknown or not supervised. */
  char              *method;
  int                hspace_channels, hspace_height, hspace_width;  /* 0 when unknown */
} DdimDirection;

/* A zeroed direction of that shape (pooled: @ndim 1, @height and @width
 * ignored). Kind supervised, no metadata (t -1, strengths 0). */
DdimDirection *ddim_direction_new (const char *name, DdimDirectionSpace space, int ndim,
                                   int channels, int height, int width);
/* A zeroed per-timestep h-space direction: @n_timesteps (>= 2) blocks for
 * @timesteps (strictly descending, copied). */
DdimDirection *ddim_direction_new_per_timestep (const char *name, int ndim, int channels,
                                                int height, int width, int n_timesteps,
                                                const int *timesteps);
DdimDirection *ddim_direction_copy (const DdimDirection *direction);
void           ddim_direction_free (DdimDirection *direction);
/* All floats of data, and those of one block. */
gsize          ddim_direction_get_n_elements (const DdimDirection *direction);
gsize          ddim_direction_get_block_elements (const DdimDirection *direction);
/* "[64, 8, 8]" or "[64]", "[64, 8, 8] at 10 timesteps" (g_free). */
char          *ddim_direction_shape_string (const DdimDirection *direction);

/* Whether @direction fits @unet at @height x @width: its shape must be the
 * model's h-space there (space h; pooled: the channel count) or the model
 * input (space x), otherwise DDIM_ERROR_MISMATCH naming both shapes. When
 * @model_sha256 and the direction's are both known and differ, also
 * DDIM_ERROR_MISMATCH (a direction of another model). */
gboolean ddim_direction_check (const DdimDirection *direction, DdimUNet *unet,
                               const char *model_sha256, int height, int width, GError **error);
/* A strength must be finite: NaN or infinity is DDIM_ERROR_INVALID. */
gboolean ddim_direction_check_strength (double strength, GError **error);
/* Names: non-empty UTF-8, at most 200 bytes, no control characters, no
 * whitespace. DDIM_ERROR_INVALID otherwise. */
gboolean ddim_direction_name_is_valid (const char *name, GError **error);

/* The displacement a direction makes at @strength at sampling timestep
 * @t (used by per-timestep directions only), expanded to its full shape:
 * space h, C_mid x @height x @width of the model's h-space (a pooled
 * direction broadcast over positions); space x, its own shape. @out has
 * that many floats. */
void ddim_direction_expand (const DdimDirection *direction, double strength, int t, int height,
                            int width, float *out);

const char *ddim_direction_kind_to_string (DdimDirectionKind kind);
gboolean    ddim_direction_kind_from_string (const char *s, DdimDirectionKind *kind,
                                             GError **error);
const char *ddim_direction_space_to_string (DdimDirectionSpace space);
gboolean    ddim_direction_space_from_string (const char *s, DdimDirectionSpace *space,
                                              GError **error);

/* An ordered set of directions with unique names (the file's contents). */
typedef struct _DdimDirectionSet DdimDirectionSet;

DdimDirectionSet *ddim_direction_set_new (void);
void              ddim_direction_set_free (DdimDirectionSet *set);
guint             ddim_direction_set_get_n (DdimDirectionSet *set);
DdimDirection    *ddim_direction_set_get_nth (DdimDirectionSet *set, guint index);
/* Takes @direction; one of the same name is replaced in place. */
void              ddim_direction_set_add (DdimDirectionSet *set, DdimDirection *direction);
/* Adds copies of all of @other's directions (replacing same names). */
void              ddim_direction_set_merge (DdimDirectionSet *set, DdimDirectionSet *other);
/* Adds copies of all of @other's directions, refusing what would silently
 * replace or mix: a name @set already has (DDIM_ERROR_INVALID), or a
 * direction that cannot come from the model @set's directions come from
 * (DDIM_ERROR_MISMATCH): both model hashes known and different, another
 * channel count in the same space (C_mid for h, C_in for x), or, for the
 * same space and ndim, another shape. On error @set is unchanged. @label
 * names @other in the messages (a file name; may be NULL). */
gboolean          ddim_direction_set_merge_strict (DdimDirectionSet *set,
                                                   DdimDirectionSet *other, const char *label,
                                                   GError **error);
/* By exact name; failing that, "component-N" (N >= 1) is the N-th
 * unsupervised or PCA direction in file order. Otherwise NULL and a
 * DDIM_ERROR_INVALID error listing the names there are. Borrowed. */
DdimDirection    *ddim_direction_set_lookup (DdimDirectionSet *set, const char *name,
                                             GError **error);
/* "a, b, c" or "(none)" (g_free). */
char             *ddim_direction_set_list_names (DdimDirectionSet *set);

GBytes           *ddim_direction_set_to_bytes (DdimDirectionSet *set);
/* Atomic (temporary file, then rename). */
gboolean          ddim_direction_set_save (DdimDirectionSet *set, const char *path,
                                           GError **error);
/* A newer format is DDIM_ERROR_UNSUPPORTED; a file that is not a
 * directions file, a tensor without its metadata or a bad shape
 * DDIM_ERROR_FORMAT. */
DdimDirectionSet *ddim_direction_set_new_from_bytes (GBytes *bytes, GError **error);
DdimDirectionSet *ddim_direction_set_load (const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimDirection, ddim_direction_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimDirectionSet, ddim_direction_set_free)

G_END_DECLS
