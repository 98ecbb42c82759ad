/* One supervised direction per class of a labelled set (see ddim/fit.h):
 * every example's feature is collected once and serves as a positive for
 * its own class and as a negative for all the others, so fitting K classes
 * costs what fitting one direction from the same examples does. */
#include <string.h>

#include "ddim/error.h"
#include "ddim/fit.h"
#include "edit/fit-private.h"

static gboolean
check_labels (const int *labels, int n, int n_classes, const char *const *names,
              int *counts, GError **error)
{
  if (n_classes < 2)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "fitting class directions needs at least 2 classes, not %d", n_classes);
      return FALSE;
    }
  memset (counts, 0, (gsize) n_classes * sizeof (int));
  for (int i = 0; i < n; i++)
    {
      if (labels[i] < 0 || labels[i] >= n_classes)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                       "example %d has label %d, outside 0..%d", i, labels[i], n_classes - 1);
          return FALSE;
        }
      counts[labels[i]]++;
    }
  int fitted = 0;
  for (int k = 0; k < n_classes; k++)
    {
      if (counts[k] == 0)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                       "class %d%s%s%s has no examples; every class is needed (as positives "
                       "or as negatives)", k, names[k] ? " (" : "", names[k] ? names[k] : "",
                       names[k] ? ")" : "");
          return FALSE;
        }
      if (names[k] != NULL)
        {
          if (!ddim_direction_name_is_valid (names[k], error))
            return FALSE;
          for (int j = 0; j < k; j++)
            if (g_strcmp0 (names[j], names[k]) == 0)
              {
                g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                             "classes %d and %d have the same direction name '%s'", j, k,
                             names[k]);
                return FALSE;
              }
          fitted++;
        }
    }
  if (fitted == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "no class to fit a direction for");
      return FALSE;
    }
  return TRUE;
}

DdimDirectionSet *
ddim_fit_class_directions (DdimUNet *unet, const DdimSchedule *s, const float *images,
                           const int *labels, int n, int n_classes, const char *const *names,
                           const char *const *descriptions, int height, int width,
                           const DdimFitOptions *o, GError **error)
{
  g_return_val_if_fail (unet && s && names && o, NULL);
  g_return_val_if_fail (n <= 0 || (images != NULL && labels != NULL), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  if (n < 0)
    n = 0;
  g_autofree int *counts = g_new (int, MAX (n_classes, 1));
  if (!check_labels (labels, n, n_classes, names, counts, error))
    return NULL;
  g_auto (DdimFitPlan) plan = { 0 };
  if (!ddim_fit_plan (unet, s, height, width, o, &plan, error))
    return NULL;

  int done = 0, total = ddim_fit_plan_calls (&plan, o, n);
  g_autofree double *f = g_new (double, (gsize) n * plan.D);
  if (!ddim_fit_collect (unet, s, images, n, height, width, o, &plan, f, &done, total, error))
    return NULL;

  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  g_autofree double *y = g_new (double, n), *w = g_new (double, n);
  for (int k = 0; k < n_classes; k++)
    {
      if (names[k] == NULL)
        continue;
      /* Half the weight on class k, the other half split equally among the
       * other n_classes - 1 classes, then equally within each class. */
      for (int i = 0; i < n; i++)
        {
          gboolean pos = labels[i] == k;
          y[i] = pos ? 1.0 : -1.0;
          w[i] = pos ? 0.5 / counts[k] : 0.5 / ((double) (n_classes - 1) * counts[labels[i]]);
        }
      const char *desc = descriptions ? descriptions[k] : NULL;
      DdimDirection *d = ddim_fit_from_features (names[k], desc, f, y, w, n, &plan, o, error);
      if (d == NULL)
        {
          g_prefix_error (error, "class %s: ", names[k]);
          return NULL;
        }
      ddim_direction_set_add (set, d);
    }
  return g_steal_pointer (&set);
}
