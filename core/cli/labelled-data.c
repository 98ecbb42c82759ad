/* --data for the commands that need labels (see labelled-data.h). */
#include "labelled-data.h"
#include "ddim/error.h"

DdimDataset *
cli_load_labelled_data (const char *data, DdimModel *model, GError **error)
{
  g_return_val_if_fail (data != NULL && model != NULL, NULL);
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  const char *split = g_str_equal (data, "fashion-mnist") ? "train"
                      : g_str_equal (data, "fashion-mnist-test") ? "test" : NULL;
  if (split == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "--data must be a labelled set: fashion-mnist (the training split) or "
                   "fashion-mnist-test, not '%s'", data);
      return NULL;
    }
  return ddim_dataset_load_fashion_mnist (NULL, split, c->sample_size, c->in_channels, 0,
                                          error);
}
