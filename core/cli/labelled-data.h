/* Labelled data sets named on the command line (--data), shared by
 * 'directions fit --by-class' and 'eval-edit'. */
#pragma once

#include <glib.h>

#include "ddim/dataset.h"
#include "ddim/model.h"

G_BEGIN_DECLS

/* "fashion-mnist" (the training split) or "fashion-mnist-test" from
 * Debian's dataset-fashion-mnist (ddim_dataset_default_fashion_mnist_dir),
 * with labels, at @model's sample size and channel count. Another name is
 * DDIM_ERROR_INVALID; dataset errors as ddim_dataset_load_fashion_mnist. */
DdimDataset *cli_load_labelled_data (const char *data, DdimModel *model, GError **error);

G_END_DECLS
