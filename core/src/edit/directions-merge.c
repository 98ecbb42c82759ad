/* Merging directions files without surprises (see
 * ddim_direction_set_merge_strict in ddim/directions.h): shipping the class
 * directions and the global components of one model in one file must not
 * quietly drop one of two same-named directions or mix in another model's. */
#include "ddim/directions.h"
#include "ddim/error.h"

/* Why @b cannot sit beside @a (g_free), or NULL. */
static char *
conflict (const DdimDirection *a, const DdimDirection *b)
{
  if (a->model_sha256 && b->model_sha256 && a->model_sha256[0] && b->model_sha256[0]
      && g_strcmp0 (a->model_sha256, b->model_sha256) != 0)
    return g_strdup_printf ("'%s' was made for another model than '%s' (weights %.12s... and "
                            "%.12s...)", b->name, a->name, b->model_sha256, a->model_sha256);
  if (a->space != b->space)
    return NULL;
  gboolean same_shape = a->channels == b->channels
                        && (a->ndim != b->ndim
                            || (a->height == b->height && a->width == b->width));
  if (same_shape)
    return NULL;
  g_autofree char *sa = ddim_direction_shape_string (a);
  g_autofree char *sb = ddim_direction_shape_string (b);
  return g_strdup_printf ("'%s' has shape %s, which does not match '%s' (%s) in %s-space",
                          b->name, sb, a->name, sa, ddim_direction_space_to_string (a->space));
}

gboolean
ddim_direction_set_merge_strict (DdimDirectionSet *set, DdimDirectionSet *other,
                                 const char *label, GError **error)
{
  g_return_val_if_fail (set != NULL && other != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  const char *from = label ? label : "the added set";
  guint n = ddim_direction_set_get_n (set), m = ddim_direction_set_get_n (other);
  for (guint j = 0; j < m; j++)
    {
      const DdimDirection *b = ddim_direction_set_get_nth (other, j);
      for (guint i = 0; i < n; i++)
        {
          const DdimDirection *a = ddim_direction_set_get_nth (set, i);
          if (g_strcmp0 (a->name, b->name) == 0)
            {
              g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                           "%s: a direction named '%s' is already there; rename or drop one "
                           "of the two first", from, b->name);
              return FALSE;
            }
          g_autofree char *why = conflict (a, b);
          if (why)
            {
              g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH, "%s: %s", from, why);
              return FALSE;
            }
        }
    }
  ddim_direction_set_merge (set, other);
  return TRUE;
}
