/* ddim directions fit --by-class: one direction per Fashion-MNIST class
 * ("toward sneaker"), fitted from the data's labels. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd-directions.h"
#include "labelled-data.h"
#include "ddim/classifier.h"

#define N_CLASSES DDIM_FASHION_MNIST_N_CLASSES

/* Which classes to fit: @fit[k] TRUE for those named in @classes
 * ("a,b"), every class when NULL. */
static gboolean
parse_classes (const char *classes, gboolean *fit, GError **error)
{
  for (int k = 0; k < N_CLASSES; k++)
    fit[k] = classes == NULL;
  if (classes == NULL)
    return TRUE;
  g_auto (GStrv) parts = g_strsplit (classes, ",", -1);
  for (int i = 0; parts[i]; i++)
    {
      int label;
      if (!ddim_fashion_mnist_class_from_name (g_strstrip (parts[i]), &label, error))
        return FALSE;
      fit[label] = TRUE;
    }
  return TRUE;
}

typedef struct {
  DdimModel         *model;
  const float       *images;
  const int         *labels;
  int                n;
  const char        *names[N_CLASSES];
  char              *descriptions[N_CLASSES];
  DdimFitOptions    *options;
  DdimDirectionSet  *result;
} ClassFitJob;

static gboolean
class_fit_job (gpointer data, DdimProgressFunc progress, gpointer progress_data,
               GCancellable *cancellable, GError **error)
{
  ClassFitJob *j = data;
  const DdimUNetConfig *c = ddim_unet_get_config (j->model->unet);
  j->options->run.progress = progress;
  j->options->run.progress_data = progress_data;
  j->options->run.cancellable = cancellable;
  j->result = ddim_fit_class_directions (j->model->unet, j->model->schedule, j->images,
                                         j->labels, j->n, N_CLASSES, j->names,
                                         (const char *const *) j->descriptions, c->sample_size,
                                         c->sample_size, j->options, error);
  j->options->run.progress = NULL;
  j->options->run.progress_data = NULL;
  j->options->run.cancellable = NULL;
  return j->result != NULL;
}

DdimDirectionSet *
cli_fit_class_directions (const char *cmd, DdimModel *model, const char *data, int per_class,
                          const char *classes, DdimFitOptions *options, gboolean quiet,
                          int *exit_code)
{
  g_autoptr (GError) error = NULL;
  gboolean fit[N_CLASSES];
  if (!parse_classes (classes, fit, &error))
    {
      *exit_code = cli_usage_error (cmd, "--classes: %s", error->message);
      return NULL;
    }
  if (!quiet)
    fprintf (stderr, "ddim %s: loading %s\n", cmd, data);
  g_autoptr (DdimDataset) ds = cli_load_labelled_data (data, model, &error);
  if (ds == NULL)
    {
      *exit_code = cli_error (cmd, error);
      return NULL;
    }

  /* Every class contributes its first per_class images, as positives for
   * its own direction and negatives for the others: the same examples on
   * every run. */
  int n = N_CLASSES * per_class;
  g_autofree int *indices = g_new (int, n), *labels = g_new (int, n);
  for (int k = 0; k < N_CLASSES; k++)
    {
      g_autofree int *idx = ddim_dataset_find_labels (ds, k, FALSE, per_class, &error);
      if (idx == NULL)
        {
          *exit_code = cli_fail (cmd, "%s, class %s: %s", data,
                                 ddim_fashion_mnist_class_slug (k), error->message);
          return NULL;
        }
      memcpy (indices + k * per_class, idx, (gsize) per_class * sizeof (int));
      for (int i = 0; i < per_class; i++)
        labels[k * per_class + i] = k;
    }
  g_autofree float *images = ddim_dataset_gather (ds, indices, n);
  g_clear_pointer (&ds, ddim_dataset_free);

  ClassFitJob job = { 0 };
  job.model = model;
  job.images = images;
  job.labels = labels;
  job.n = n;
  job.options = options;
  int n_fit = 0;
  for (int k = 0; k < N_CLASSES; k++)
    if (fit[k])
      {
        job.names[k] = ddim_fashion_mnist_class_slug (k);
        job.descriptions[k] = g_strconcat ("toward ",
                                           ddim_fashion_mnist_class_name (k), NULL);
        /* "toward ankle boot", "toward t-shirt/top": the class as people
         * name it. */
        for (char *p = job.descriptions[k]; *p; p++)
          *p = g_ascii_tolower (*p);
        n_fit++;
      }
  if (!quiet)
    fprintf (stderr, "ddim %s: %d class direction%s from the first %d images of each of the "
             "%d classes (%d images), %d steps, %s\n", cmd, n_fit, n_fit == 1 ? "" : "s",
             per_class, N_CLASSES, n, options->run.steps,
             ddim_fit_method_to_string (options->method));
  *exit_code = cli_run_job (cmd, "fit", class_fit_job, &job, quiet);
  for (int k = 0; k < N_CLASSES; k++)
    g_free (job.descriptions[k]);
  if (*exit_code != CLI_EXIT_OK)
    {
      g_clear_pointer (&job.result, ddim_direction_set_free);
      return NULL;
    }
  if (!quiet)
    for (guint i = 0; i < ddim_direction_set_get_n (job.result); i++)
      {
        const DdimDirection *d = ddim_direction_set_get_nth (job.result, i);
        fprintf (stderr, "ddim %s: %-10s distance between the means %.4g, recommended "
                 "strengths %.4g..%.4g\n", cmd, d->name, d->sigma, d->strength_min,
                 d->strength_max);
      }
  return job.result;
}
