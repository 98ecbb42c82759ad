/* Deterministic picks from a labelled dataset (see ddim/dataset.h): the
 * class directions are fitted, and edits evaluated, on the first items of
 * each class in file order, so that a run can be repeated exactly. */
#include <string.h>

#include "ddim/dataset.h"
#include "ddim/error.h"

int *
ddim_dataset_find_labels (const DdimDataset *d, int label, gboolean other, int count,
                          GError **error)
{
  g_return_val_if_fail (d != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  if (d->labels == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the data has no labels (a labelled set such as Fashion-MNIST is needed)");
      return NULL;
    }
  if (count < 1)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the number of items to pick must be at least 1, not %d", count);
      return NULL;
    }
  g_autofree int *idx = g_new (int, count);
  int found = 0, qualifying = 0;
  for (int i = 0; i < d->n; i++)
    if ((d->labels[i] == label) != (other != FALSE))
      {
        if (found < count)
          idx[found++] = i;
        qualifying++;
      }
  if (found < count)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "%d items with a label %s %d asked for, the data has only %d", count,
                   other ? "other than" : "of", label, qualifying);
      return NULL;
    }
  return g_steal_pointer (&idx);
}

float *
ddim_dataset_gather (const DdimDataset *d, const int *indices, int n)
{
  g_return_val_if_fail (d != NULL && (n == 0 || indices != NULL) && n >= 0, NULL);
  for (int i = 0; i < n; i++)
    g_return_val_if_fail (indices[i] >= 0 && indices[i] < d->n, NULL);
  gsize per = (gsize) d->channels * d->size * d->size;
  float *out = g_new (float, MAX ((gsize) n * per, 1));
  for (int i = 0; i < n; i++)
    memcpy (out + (gsize) i * per, ddim_dataset_get_image (d, indices[i]),
            per * sizeof (float));
  return out;
}
