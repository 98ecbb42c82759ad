/* The Fashion-MNIST classifier (see ddim/classifier.h): a convnet trained
 * with softmax cross-entropy on seeded batches. */
#include <math.h>
#include <string.h>

#include "ddim/classifier.h"
#include "ddim/error.h"

#define KIND "fashion-mnist-classifier"
#define N_CLASSES DDIM_FASHION_MNIST_N_CLASSES

static const char *const class_names[N_CLASSES] = {
  "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
};

static const char *const class_slugs[N_CLASSES] = {
  "t-shirt", "trouser", "pullover", "dress", "coat",
  "sandal", "shirt", "sneaker", "bag", "ankle-boot"
};

struct _DdimClassifier {
  DdimConvNet *net;
  int          channels, size;
};

const char *
ddim_fashion_mnist_class_name (int label)
{
  return label >= 0 && label < N_CLASSES ? class_names[label] : NULL;
}

const char *
ddim_fashion_mnist_class_slug (int label)
{
  return label >= 0 && label < N_CLASSES ? class_slugs[label] : NULL;
}

gboolean
ddim_fashion_mnist_class_from_name (const char *name, int *label, GError **error)
{
  g_return_val_if_fail (label != NULL, FALSE);
  for (int k = 0; name && k < N_CLASSES; k++)
    if (g_ascii_strcasecmp (name, class_slugs[k]) == 0
        || g_ascii_strcasecmp (name, class_names[k]) == 0)
      {
        *label = k;
        return TRUE;
      }
  GString *all = g_string_new (NULL);
  for (int k = 0; k < N_CLASSES; k++)
    g_string_append_printf (all, "%s%s", k ? ", " : "", class_slugs[k]);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
               "'%s' is not a Fashion-MNIST class (%s)", name ? name : "(null)", all->str);
  g_string_free (all, TRUE);
  return FALSE;
}

void
ddim_classifier_free (DdimClassifier *c)
{
  if (c == NULL)
    return;
  ddim_convnet_free (c->net);
  g_free (c);
}

static void
set_int_meta (DdimConvNet *net, const char *key, gint64 v)
{
  g_autofree char *s = g_strdup_printf ("%" G_GINT64_FORMAT, v);
  ddim_convnet_set_metadata (net, key, s);
}

/* Checks that @net maps channels x size x size to N_CLASSES logits. */
static gboolean
check_net (DdimConvNet *net, int size, GError **error)
{
  int oh, ow;
  if (!ddim_convnet_is_flat (net) || ddim_convnet_get_out_channels (net) != N_CLASSES)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "a classifier network must end in %d features (pool, then linear %d)",
                   N_CLASSES, N_CLASSES);
      return FALSE;
    }
  return ddim_convnet_output_size (net, size, size, &oh, &ow, error);
}

DdimClassifier *
ddim_classifier_new (int channels, int size, const char *arch, guint64 seed, GError **error)
{
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  if (channels != 1 && channels != 3)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "a classifier takes 1 or 3 channels, not %d", channels);
      return NULL;
    }
  if (size < 4 || size > 4096)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the classifier's image size must be between 4 and 4096, not %d", size);
      return NULL;
    }
  g_autoptr (DdimConvNet) net = ddim_convnet_new (channels, arch ? arch
                                                              : DDIM_CLASSIFIER_DEFAULT_ARCH,
                                                  error);
  if (net == NULL || !check_net (net, size, error))
    return NULL;
  ddim_convnet_init_params (net, seed);
  ddim_convnet_set_metadata (net, "kind", KIND);
  set_int_meta (net, "channels", channels);
  set_int_meta (net, "size", size);
  g_autofree char *classes = g_strjoinv (",", (char **) class_names);
  ddim_convnet_set_metadata (net, "classes", classes);
  DdimClassifier *c = g_new0 (DdimClassifier, 1);
  c->net = g_steal_pointer (&net);
  c->channels = channels;
  c->size = size;
  return c;
}

int
ddim_classifier_get_channels (const DdimClassifier *c)
{
  g_return_val_if_fail (c != NULL, 0);
  return c->channels;
}

int
ddim_classifier_get_size (const DdimClassifier *c)
{
  g_return_val_if_fail (c != NULL, 0);
  return c->size;
}

DdimConvNet *
ddim_classifier_get_net (DdimClassifier *c)
{
  g_return_val_if_fail (c != NULL, NULL);
  return c->net;
}

void
ddim_classifier_train_options_init (DdimTrainOptions *o)
{
  g_return_if_fail (o != NULL);
  ddim_train_options_init (o);
  o->batch_size = 64;
  o->steps = 2000;
  o->lr = 2e-3;
  o->warmup_steps = 100;
  o->lr_min_ratio = 0;
  o->weight_decay = 1e-4;
  o->grad_clip = 1.0;
  o->hflip = TRUE;
  o->seed = 0;
}

gboolean
ddim_classifier_check_input (const DdimClassifier *c, int channels, int size, GError **error)
{
  g_return_val_if_fail (c != NULL, FALSE);
  if (channels != c->channels || size != c->size)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "the classifier takes %d-channel %dx%d images, not %d-channel %dx%d ones",
                   c->channels, c->size, c->size, channels, size, size);
      return FALSE;
    }
  return TRUE;
}

static gboolean
check_dataset (const DdimClassifier *c, const DdimDataset *ds, GError **error)
{
  if (ds->n < 1 || ds->images == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "the data set is empty");
      return FALSE;
    }
  if (ds->labels == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the data set has no labels (load it with its labels file)");
      return FALSE;
    }
  for (int i = 0; i < ds->n; i++)
    if (ds->labels[i] >= N_CLASSES)
      {
        g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                     "image %d has label %d; a Fashion-MNIST label is 0..%d", i,
                     ds->labels[i], N_CLASSES - 1);
        return FALSE;
      }
  return ddim_classifier_check_input (c, ds->channels, ds->size, error);
}

/* ---- training ---- */

typedef struct {
  const int *labels;   /* of the batch */
  int        n;
} CeCtx;

/* Mean softmax cross-entropy of logits [n, N_CLASSES]; the gradient is
 * (softmax - onehot) / n. */
static gboolean
cross_entropy (const float *out, float *dout, gsize count, double *loss, gpointer data,
               GError **error)
{
  (void) error;
  CeCtx *ce = data;
  g_assert (count == (gsize) ce->n * N_CLASSES);
  double total = 0;
  for (int b = 0; b < ce->n; b++)
    {
      const float *z = out + (gsize) b * N_CLASSES;
      float *g = dout + (gsize) b * N_CLASSES;
      double mx = z[0];
      for (int k = 1; k < N_CLASSES; k++)
        mx = MAX (mx, z[k]);
      double se = 0;
      for (int k = 0; k < N_CLASSES; k++)
        se += exp (z[k] - mx);
      double lse = mx + log (se);
      total += lse - z[ce->labels[b]];
      for (int k = 0; k < N_CLASSES; k++)
        {
          double p = exp (z[k] - lse);
          g[k] = (float) ((p - (k == ce->labels[b] ? 1.0 : 0.0)) / ce->n);
        }
    }
  *loss = total / ce->n;
  return TRUE;
}

gboolean
ddim_classifier_train (DdimClassifier *c, const DdimDataset *ds, const DdimTrainOptions *o,
                       GError **error)
{
  g_return_val_if_fail (c != NULL && ds != NULL && o != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  if (!check_dataset (c, ds, error))
    return FALSE;
  if (o->batch_size < 1 || o->batch_size > 65536)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "training options: batch_size must be between 1 and 65536");
      return FALSE;
    }
  g_autoptr (DdimConvNetTrainer) tr = ddim_convnet_trainer_new (c->net, o, error);
  if (tr == NULL)
    return FALSE;
  int B = o->batch_size, S = c->size, C = c->channels;
  gsize per = (gsize) C * S * S;
  g_autofree float *x = g_new (float, (gsize) B * per);
  g_autofree int *labels = g_new (int, B);
  g_autofree int *idx = g_new (int, B);
  double loss = NAN;
  for (int step = 0; step < o->steps; step++)
    {
      if (o->cancellable && g_cancellable_is_cancelled (o->cancellable))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED,
                       "training cancelled after step %d", step);
          return FALSE;
        }
      ddim_convnet_batch_indices (o->seed, ds->n, step, B, idx);
      guint64 fs = ddim_convnet_derive_seed (o->seed, 2, (guint64) step);
      for (int i = 0; i < B; i++)
        {
          const float *src = ddim_dataset_get_image (ds, idx[i]);
          float *dst = x + (gsize) i * per;
          gboolean flip = (fs >> (i % 64)) & 1;
          if (i % 64 == 63)
            fs = ddim_convnet_derive_seed (fs, 3, (guint64) i);
          if (o->hflip && flip)
            for (int r = 0; r < C * S; r++)
              for (int col = 0; col < S; col++)
                dst[(gsize) r * S + col] = src[(gsize) r * S + (S - 1 - col)];
          else
            memcpy (dst, src, per * sizeof (float));
          labels[i] = ds->labels[idx[i]];
        }
      CeCtx ce = { labels, B };
      if (!ddim_convnet_trainer_step (tr, x, B, S, S, cross_entropy, &ce, &loss, error))
        return FALSE;
      if (o->progress)
        o->progress (step + 1, o->steps, loss, o->progress_data);
    }
  set_int_meta (c->net, "train_steps", o->steps);
  set_int_meta (c->net, "train_batch", B);
  set_int_meta (c->net, "train_images", ds->n);
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  ddim_convnet_set_metadata (c->net, "train_loss",
                             isfinite (loss) ? g_ascii_formatd (buf, sizeof buf, "%.4f", loss)
                                             : NULL);
  g_autofree char *seed = g_strdup_printf ("%" G_GUINT64_FORMAT, o->seed);
  ddim_convnet_set_metadata (c->net, "train_seed", seed);
  return TRUE;
}

/* ---- inference ---- */

gboolean
ddim_classifier_predict (const DdimClassifier *c, const float *x, int n, int *labels,
                         float *probs, GError **error)
{
  g_return_val_if_fail (c != NULL && x != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  if (n < 1)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "no images to classify");
      return FALSE;
    }
  g_autofree float *logits = g_new (float, (gsize) n * N_CLASSES);
  if (!ddim_convnet_forward (c->net, x, n, c->size, c->size, logits, error))
    return FALSE;
  for (int b = 0; b < n; b++)
    {
      const float *z = logits + (gsize) b * N_CLASSES;
      int best = 0;
      for (int k = 1; k < N_CLASSES; k++)
        if (z[k] > z[best])
          best = k;
      if (labels)
        labels[b] = best;
      if (probs)
        {
          double se = 0;
          for (int k = 0; k < N_CLASSES; k++)
            se += exp ((double) z[k] - z[best]);
          for (int k = 0; k < N_CLASSES; k++)
            probs[(gsize) b * N_CLASSES + k] = (float) (exp ((double) z[k] - z[best]) / se);
        }
    }
  return TRUE;
}

gboolean
ddim_classifier_evaluate (const DdimClassifier *c, const DdimDataset *ds, double *accuracy,
                          int *confusion, GError **error)
{
  g_return_val_if_fail (c != NULL && ds != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  if (!check_dataset (c, ds, error))
    return FALSE;
  g_autofree int *pred = g_new (int, ds->n);
  if (!ddim_classifier_predict (c, ds->images, ds->n, pred, NULL, error))
    return FALSE;
  if (confusion)
    memset (confusion, 0, sizeof (int) * N_CLASSES * N_CLASSES);
  int right = 0;
  for (int i = 0; i < ds->n; i++)
    {
      right += pred[i] == ds->labels[i];
      if (confusion)
        confusion[ds->labels[i] * N_CLASSES + pred[i]]++;
    }
  if (accuracy)
    *accuracy = (double) right / ds->n;
  return TRUE;
}

/* ---- files ---- */

gboolean
ddim_classifier_save (const DdimClassifier *c, const char *dir, gboolean f16, GError **error)
{
  g_return_val_if_fail (c != NULL && dir != NULL, FALSE);
  return ddim_convnet_save (c->net, dir, f16, error);
}

DdimClassifier *
ddim_classifier_load (const char *dir, GError **error)
{
  g_return_val_if_fail (dir != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  g_autoptr (DdimConvNet) net = ddim_convnet_load_kind (dir, KIND, "a Fashion-MNIST classifier",
                                                       error);
  if (net == NULL)
    return NULL;
  int channels, size;
  if (!ddim_convnet_get_metadata_int (net, "channels", 1, 3, &channels, error)
      || !ddim_convnet_get_metadata_int (net, "size", 4, 4096, &size, error))
    {
      g_prefix_error (error, "%s: ", dir);
      return NULL;
    }
  g_autoptr (GError) local = NULL;
  if (ddim_convnet_get_in_channels (net) != channels || !check_net (net, size, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "%s: the network does not map %d-channel %dx%d images to %d classes%s%s",
                   dir, channels, size, size, N_CLASSES, local ? ": " : "",
                   local ? local->message : "");
      return NULL;
    }
  DdimClassifier *c = g_new0 (DdimClassifier, 1);
  c->net = g_steal_pointer (&net);
  c->channels = channels;
  c->size = size;
  return c;
}
