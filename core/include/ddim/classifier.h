/* A small Fashion-MNIST classifier (a convnet.h network), to judge a
 * model's samples: which classes it draws and how often. Input: images
 * [n, channels, size, size] in [-1, 1] as ddim_dataset_load_fashion_mnist
 * gives them (28x28 digits centred on a 32x32 canvas of -1 for size 32).
 * Training minimises the cross-entropy of the softmax of the logits. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/convnet.h"
#include "ddim/dataset.h"
#include "ddim/train.h"

G_BEGIN_DECLS

#define DDIM_FASHION_MNIST_N_CLASSES 10

/* "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
 * "Shirt", "Sneaker", "Bag", "Ankle boot" for labels 0..9; NULL otherwise. */
const char *ddim_fashion_mnist_class_name (int label);

/* The same classes as direction names (lower-case ASCII, '-' for a
 * space): "t-shirt", "trouser", "pullover", "dress", "coat", "sandal",
 * "shirt", "sneaker", "bag", "ankle-boot"; NULL for another label. */
const char *ddim_fashion_mnist_class_slug (int label);

/* The label of @name, one of the slugs above or a class name as
 * ddim_fashion_mnist_class_name gives it (ASCII case ignored). Otherwise
 * DDIM_ERROR_INVALID listing the slugs. */
gboolean    ddim_fashion_mnist_class_from_name (const char *name, int *label, GError **error);

/* The default network: three stride-2 convolutions (32 -> 16 -> 8 -> 4
 * pixels at size 32) and one more at 4x4, so that the features the global
 * average pool gathers see the whole image (a 31-pixel receptive field),
 * then the logits:
 *   conv 32 s2, gn 8, silu, conv 64 s2, gn 8, silu, conv 128 s2, gn 8, silu,
 *   conv 128, gn 8, silu, pool, linear 10
 * (about 240k parameters, 5 M multiply-adds per 32x32 image). With a
 * stride-1 first layer and pooling at 8x8 (15-pixel receptive field) the
 * same training reached 5-8 points less after 300 steps. */
#define DDIM_CLASSIFIER_DEFAULT_ARCH \
  "conv 32 s2, gn 8, silu, conv 64 s2, gn 8, silu, conv 128 s2, gn 8, silu, " \
  "conv 128, gn 8, silu, pool, linear 10"

typedef struct _DdimClassifier DdimClassifier;

/* A classifier of @channels x @size x @size images with the default
 * network (@arch NULL) or @arch (which must end in a flat output of
 * N_CLASSES features), initialised from @seed. DDIM_ERROR_INVALID for a
 * bad size, channel count or architecture. */
DdimClassifier *ddim_classifier_new (int channels, int size, const char *arch, guint64 seed,
                                     GError **error);
void            ddim_classifier_free (DdimClassifier *classifier);

int             ddim_classifier_get_channels (const DdimClassifier *classifier);
int             ddim_classifier_get_size (const DdimClassifier *classifier);
/* The network (owned by the classifier). */
DdimConvNet    *ddim_classifier_get_net (DdimClassifier *classifier);

/* Defaults for ddim_classifier_train: batch 64, 2000 steps, lr 2e-3,
 * warm-up 100, cosine to 0, weight decay 1e-4, clip 1.0, random
 * horizontal flips, seed 0. */
void ddim_classifier_train_options_init (DdimTrainOptions *options);

/* Trains on a labelled @dataset (channels and size must be the
 * classifier's: DDIM_ERROR_MISMATCH; no labels: DDIM_ERROR_INVALID) for
 * options->steps steps of options->batch_size images drawn from seeded
 * per-epoch permutations, flipped horizontally at random when
 * options->hflip. Uses lr, warm-up, decay, weight decay, Adam and clipping
 * as ddim_convnet_trainer_new, progress (called after every step with the
 * batch loss) and cancellable (DDIM_ERROR_CANCELLED, checked before every
 * step). Records the steps and the final training loss in the metadata. */
gboolean ddim_classifier_train (DdimClassifier *classifier, const DdimDataset *dataset,
                                const DdimTrainOptions *options, GError **error);

/* Classifies x [n, channels, size, size]: @labels (n ints) receives the
 * most probable class, @probs (n * N_CLASSES floats) the softmax
 * probabilities; either may be NULL. A dataset or batch of another
 * channel count or size is the caller's to check (see
 * ddim_classifier_check_input). */
gboolean ddim_classifier_predict (const DdimClassifier *classifier, const float *x, int n,
                                  int *labels, float *probs, GError **error);

/* DDIM_ERROR_MISMATCH unless @channels x @size x @size is what the
 * classifier was made for. */
gboolean ddim_classifier_check_input (const DdimClassifier *classifier, int channels, int size,
                                      GError **error);

/* Accuracy on a labelled @dataset, and the confusion counts
 * confusion[true * N_CLASSES + predicted] (N_CLASSES^2 ints; may be NULL).
 * Errors as ddim_classifier_train. */
gboolean ddim_classifier_evaluate (const DdimClassifier *classifier, const DdimDataset *dataset,
                                   double *accuracy, int *confusion, GError **error);

/* A folder (ddim_convnet_save: config.json + model.safetensors, F16 or
 * F32) with metadata kind "fashion-mnist-classifier", channels, size,
 * classes (the names, comma-separated) and what training recorded. */
gboolean        ddim_classifier_save (const DdimClassifier *classifier, const char *dir,
                                      gboolean f16, GError **error);
/* Errors as ddim_convnet_load, and DDIM_ERROR_FORMAT for a network folder
 * that is not a classifier. */
DdimClassifier *ddim_classifier_load (const char *dir, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimClassifier, ddim_classifier_free)

G_END_DECLS
