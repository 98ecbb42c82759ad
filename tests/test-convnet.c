/* The small convnet library (ddim/convnet.h) and what is built on it: the
 * Fashion-MNIST classifier (ddim/classifier.h) and the learned inversion
 * encoder (ddim/encoder.h, method "encoder" of ddim/exact.h).
 *
 * - every layer's gradients (parameters and input) against central finite
 *   differences of sum(w * net(x));
 * - architecture parsing, sizes and bad descriptions;
 * - save/load (F32 exact, F16 close), atomic replacement, refusal of a
 *   foreign folder, malformed files;
 * - a classifier trained for 100 steps on 256 Fashion-MNIST images beats
 *   chance clearly on 256 held-out test images, and predicts the same after
 *   a save/load (skipped without the data set);
 * - an encoder trained briefly on the tiny fixture model lowers its loss,
 *   loads back identical, is refused for another model, and its
 *   "encoder" latent decodes (skipped without DDIM_FIXTURES_DIR);
 * - bad input fails with the documented error codes. */
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "ddim/ddim.h"

#define FD_EPS   2e-3
#define GRAD_TOL 2e-2

/* ---- helpers ---- */

static void
rm_rf (const char *path)
{
  if (g_file_test (path, G_FILE_TEST_IS_DIR) && !g_file_test (path, G_FILE_TEST_IS_SYMLINK))
    {
      g_autoptr (GDir) d = g_dir_open (path, 0, NULL);
      const char *name;
      while (d && (name = g_dir_read_name (d)))
        {
          g_autofree char *child = g_build_filename (path, name, NULL);
          rm_rf (child);
        }
      g_rmdir (path);
    }
  else
    g_unlink (path);
}

static void
fill_uniform (GRand *r, float *x, gsize n, double lo, double hi)
{
  for (gsize i = 0; i < n; i++)
    x[i] = (float) g_rand_double_range (r, lo, hi);
}

static gsize
out_count (const DdimConvNet *net, int n, int h, int w)
{
  int oh, ow;
  g_assert_true (ddim_convnet_output_size (net, h, w, &oh, &ow, NULL));
  return (gsize) n * ddim_convnet_get_out_channels (net) * oh * ow;
}

/* sum(w * net(x)) in double. */
static double
objective (const DdimConvNet *net, const float *x, int n, int h, int w, const float *wt)
{
  gsize m = out_count (net, n, h, w);
  g_autofree float *y = g_new (float, m);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_convnet_forward (net, x, n, h, w, y, &error));
  g_assert_no_error (error);
  double s = 0;
  for (gsize i = 0; i < m; i++)
    s += (double) wt[i] * y[i];
  return s;
}

static double
max_abs (const float *a, gsize n)
{
  double m = 0;
  for (gsize i = 0; i < n; i++)
    m = MAX (m, fabs (a[i]));
  return m;
}

/* Checks the analytic gradients of @arch (input @cin x h x w, batch n)
 * against central differences: every input coordinate and every
 * parameter. */
static void
check_gradients (const char *arch, int cin, int n, int h, int w, guint32 seed)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimConvNet) net = ddim_convnet_new (cin, arch, &error);
  g_assert_no_error (error);
  ddim_convnet_init_params (net, seed);
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  gsize np = ddim_convnet_get_n_params (net);
  float *p = ddim_convnet_get_params (net);
  /* Group norm scales and shifts away from 1 and 0. */
  for (gsize i = 0; i < np; i++)
    p[i] += (float) g_rand_double_range (r, -0.2, 0.2);
  gsize nx = (gsize) n * cin * h * w;
  g_autofree float *x = g_new (float, nx);
  fill_uniform (r, x, nx, -1, 1);
  gsize m = out_count (net, n, h, w);
  g_autofree float *wt = g_new (float, m);
  fill_uniform (r, wt, m, -1, 1);

  g_autoptr (DdimConvNetTape) tape = ddim_convnet_tape_new ();
  const float *y = ddim_convnet_forward_tape (net, tape, x, n, h, w, &error);
  g_assert_no_error (error);
  g_assert_nonnull (y);
  g_autofree float *gp = g_new (float, np);
  g_autofree float *gx = g_new (float, nx);
  for (gsize i = 0; i < np; i++)
    gp[i] = 0.5f;            /* must accumulate */
  for (gsize i = 0; i < nx; i++)
    gx[i] = 7.f;             /* must be overwritten */
  ddim_convnet_backward (net, tape, wt, gp, gx);
  for (gsize i = 0; i < np; i++)
    gp[i] -= 0.5f;

  g_autofree float *num_x = g_new (float, nx);
  for (gsize i = 0; i < nx; i++)
    {
      float keep = x[i];
      x[i] = keep + (float) FD_EPS;
      double lp = objective (net, x, n, h, w, wt);
      x[i] = keep - (float) FD_EPS;
      double lm = objective (net, x, n, h, w, wt);
      x[i] = keep;
      num_x[i] = (float) ((lp - lm) / (2 * FD_EPS));
    }
  double err = 0;
  for (gsize i = 0; i < nx; i++)
    err = MAX (err, fabs (gx[i] - num_x[i]));
  double rel_x = err / MAX (max_abs (num_x, nx), 1e-12);

  double worst = 0;
  const char *worst_name = "";
  for (guint t = 0; t < ddim_convnet_get_n_tensors (net); t++)
    {
      int ndim;
      gint64 shape[4];
      gsize off;
      const char *name = ddim_convnet_get_tensor (net, t, &ndim, shape, &off);
      gsize size = 1;
      for (int d = 0; d < ndim; d++)
        size *= (gsize) shape[d];
      g_autofree float *num = g_new (float, size);
      for (gsize i = 0; i < size; i++)
        {
          float keep = p[off + i];
          p[off + i] = keep + (float) FD_EPS;
          double lp = objective (net, x, n, h, w, wt);
          p[off + i] = keep - (float) FD_EPS;
          double lm = objective (net, x, n, h, w, wt);
          p[off + i] = keep;
          num[i] = (float) ((lp - lm) / (2 * FD_EPS));
        }
      double e = 0;
      for (gsize i = 0; i < size; i++)
        e = MAX (e, fabs (gp[off + i] - num[i]));
      double rel = e / MAX (max_abs (num, size), 1e-4);
      if (rel > worst)
        {
          worst = rel;
          worst_name = name;
        }
    }
  g_test_message ("%s: input grad rel. error %.2e, worst parameter %s %.2e", arch, rel_x,
                  worst_name, worst);
  g_assert_cmpfloat (rel_x, <, GRAD_TOL);
  g_assert_cmpfloat (worst, <, GRAD_TOL);
}

/* ---- convnet ---- */

static void
test_gradients (void)
{
  /* Every layer kind: strided and plain conv, gn, silu, up, add, pool, linear. */
  check_gradients ("conv 4, gn 2, silu, conv 6 s2, gn 3, silu, up, conv 4, add 2, silu, pool, "
                   "linear 5, silu, linear 3", 2, 2, 6, 6, 1);
  /* A fully convolutional one with an odd size and two skips. */
  check_gradients ("conv 4, silu, conv 4 s2, gn 2, add 2, conv 3", 1, 2, 5, 7, 2);
  check_gradients ("conv 4 s2, gn 2, silu, conv 4 s2, silu, up, add 2, up, conv 2", 2, 1, 8, 4,
                   3);
}

static void
test_arch (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimConvNet) net = ddim_convnet_new (
      1, " conv 8 ;conv   16 s2\n gn 4, silu,, pool, linear 10 ", &error);
  g_assert_no_error (error);
  g_autofree char *arch = ddim_convnet_get_arch (net);
  g_assert_cmpstr (arch, ==, "conv 8, conv 16 s2, gn 4, silu, pool, linear 10");
  g_assert_cmpint (ddim_convnet_get_n_layers (net), ==, 6);
  g_assert_true (ddim_convnet_is_flat (net));
  g_assert_cmpint (ddim_convnet_get_out_channels (net), ==, 10);
  g_assert_cmpint (ddim_convnet_get_layer_kind (net, 2), ==, DDIM_CONVNET_GROUP_NORM);
  /* 8*1*9+8 + 16*8*9+16 + 4+... */
  g_assert_cmpuint (ddim_convnet_get_n_params (net), ==,
                    8 * 9 + 8 + 16 * 8 * 9 + 16 + 16 + 16 + 10 * 16 + 10);
  g_assert_cmpuint (ddim_convnet_get_n_tensors (net), ==, 8);
  g_assert_cmpstr (ddim_convnet_get_tensor (net, 2, NULL, NULL, NULL), ==, "layers.1.weight");
  int oh, ow;
  g_assert_true (ddim_convnet_output_size (net, 32, 32, &oh, &ow, &error));
  g_assert_cmpint (oh, ==, 1);
  g_assert_cmpint (ow, ==, 1);

  g_autoptr (DdimConvNet) fc = ddim_convnet_new (1, "conv 4 s2, conv 4 s2, up, add 0, conv 1",
                                                 &error);
  g_assert_no_error (error);
  g_assert_true (ddim_convnet_output_size (fc, 12, 8, &oh, &ow, &error));
  g_assert_cmpint (oh, ==, 6);
  g_assert_cmpint (ow, ==, 4);
  /* 10 -> 5 -> 3 -> 6: the skip does not fit. */
  g_assert_false (ddim_convnet_output_size (fc, 10, 8, &oh, &ow, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  float x[4] = { 0 }, y[4];
  g_assert_false (ddim_convnet_forward (fc, x, 1, 2, 2, y, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);

  static const char *const bad[] = {
    "", " , ;", "conv", "conv 0", "conv x", "conv 8 s3", "gn 3", "gn", "silu 2", "bogus 3",
    "conv 4, add 1", "conv 4, conv 8, add 0", "pool, conv 4", "linear 4", "pool, up",
    "conv 4, pool, add 0", "pool, linear -1",
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (DdimConvNet) b = ddim_convnet_new (2, bad[i], &error);
      g_assert_null (b);
      g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
      g_test_message ("'%s': %s", bad[i], error->message);
      g_clear_error (&error);
    }
  g_assert_null (ddim_convnet_new (0, "conv 4", &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
}

static void
test_init (void)
{
  g_autoptr (DdimConvNet) a = ddim_convnet_new (3, "conv 16, gn 4, pool, linear 7", NULL);
  g_autoptr (DdimConvNet) b = ddim_convnet_new (3, "conv 16, gn 4, pool, linear 7", NULL);
  ddim_convnet_init_params (a, 5);
  ddim_convnet_init_params (b, 5);
  gsize np = ddim_convnet_get_n_params (a);
  g_assert_cmpmem (ddim_convnet_get_params (a), np * 4, ddim_convnet_get_params (b), np * 4);
  const float *p = ddim_convnet_get_params (a);
  /* conv weight: U(-1/sqrt(27), 1/sqrt(27)); gn 1 / 0; linear U(-1/4, 1/4). */
  double bound = 1 / sqrt (27.0), mx = 0;
  for (int i = 0; i < 16 * 27; i++)
    mx = MAX (mx, fabs (p[i]));
  g_assert_cmpfloat (mx, <=, bound);
  g_assert_cmpfloat (mx, >, 0.9 * bound);
  gsize gn = 16 * 27 + 16;
  for (int i = 0; i < 16; i++)
    {
      g_assert_cmpfloat (p[gn + i], ==, 1.f);
      g_assert_cmpfloat (p[gn + 16 + i], ==, 0.f);
    }
  for (gsize i = gn + 32; i < np; i++)
    g_assert_cmpfloat (fabs (p[i]), <=, 0.25);
  ddim_convnet_init_params (b, 6);
  g_assert_true (memcmp (ddim_convnet_get_params (a), ddim_convnet_get_params (b), np * 4) != 0);
}

typedef struct {
  const float *target;
} Target;

static gboolean
mse (const float *out, float *dout, gsize count, double *loss, gpointer data, GError **error)
{
  (void) error;
  const Target *t = data;
  double s = 0;
  for (gsize i = 0; i < count; i++)
    {
      double d = (double) out[i] - t->target[i];
      s += d * d;
      dout[i] = (float) (2 * d / count);
    }
  *loss = s / count;
  return TRUE;
}

static void
test_trainer (void)
{
  /* Fit a fixed random linear map of the pooled input: the loss falls. */
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimConvNet) net = ddim_convnet_new (2, "conv 8, silu, pool, linear 3", &error);
  ddim_convnet_init_params (net, 1);
  DdimTrainOptions o;
  ddim_train_options_init (&o);
  o.steps = 200;
  o.lr = 1e-2;
  o.warmup_steps = 10;
  g_autoptr (DdimConvNetTrainer) tr = ddim_convnet_trainer_new (net, &o, &error);
  g_assert_no_error (error);
  g_autoptr (GRand) r = g_rand_new_with_seed (3);
  float x[16 * 2 * 4 * 4], y[16 * 3];
  double first = 0, last = 0;
  for (int s = 0; s < o.steps; s++)
    {
      fill_uniform (r, x, G_N_ELEMENTS (x), -1, 1);
      for (int b = 0; b < 16; b++)
        {
          double m0 = 0, m1 = 0;
          for (int j = 0; j < 16; j++)
            {
              m0 += x[b * 32 + j];
              m1 += x[b * 32 + 16 + j];
            }
          y[b * 3] = (float) (m0 / 16 + m1 / 16);
          y[b * 3 + 1] = (float) (m0 / 16 - 2 * m1 / 16);
          y[b * 3 + 2] = 0.5f;
        }
      Target t = { y };
      double loss;
      g_assert_true (ddim_convnet_trainer_step (tr, x, 16, 4, 4, mse, &t, &loss, &error));
      if (s < 10)
        first += loss / 10;
      if (s >= o.steps - 10)
        last += loss / 10;
    }
  g_test_message ("trainer: loss %.4f -> %.4f", first, last);
  g_assert_cmpint (ddim_convnet_trainer_get_step (tr), ==, o.steps);
  g_assert_cmpfloat (last, <, first * 0.2);

  /* Bad options. */
  o.lr = -1;
  g_assert_null (ddim_convnet_trainer_new (net, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
}

static void
test_save_load (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *tmp = g_dir_make_tmp ("ddim-convnet-XXXXXX", NULL);
  g_autofree char *dir = g_build_filename (tmp, "net", NULL);
  const char *arch = "conv 8, gn 4, silu, conv 8 s2, up, add 2, conv 2";
  g_autoptr (DdimConvNet) net = ddim_convnet_new (2, arch, &error);
  ddim_convnet_init_params (net, 9);
  ddim_convnet_set_metadata (net, "note", "é \"quoted\"\n");
  g_assert_true (ddim_convnet_save (net, dir, FALSE, &error));
  g_assert_no_error (error);
  g_autoptr (DdimConvNet) back = ddim_convnet_load (dir, &error);
  g_assert_no_error (error);
  gsize np = ddim_convnet_get_n_params (net);
  g_assert_cmpuint (ddim_convnet_get_n_params (back), ==, np);
  g_assert_cmpmem (ddim_convnet_get_params (net), np * 4, ddim_convnet_get_params (back), np * 4);
  g_assert_cmpstr (ddim_convnet_get_metadata (back, "note"), ==, "é \"quoted\"\n");
  g_autofree char *a1 = ddim_convnet_get_arch (net);
  g_autofree char *a2 = ddim_convnet_get_arch (back);
  g_assert_cmpstr (a1, ==, a2);

  /* F16 replaces the folder in place; values within F16 rounding. */
  g_assert_true (ddim_convnet_save (net, dir, TRUE, &error));
  g_autoptr (DdimConvNet) half = ddim_convnet_load (dir, &error);
  g_assert_no_error (error);
  const float *p = ddim_convnet_get_params (net), *q = ddim_convnet_get_params (half);
  for (gsize i = 0; i < np; i++)
    g_assert_cmpfloat (fabs (p[i] - q[i]), <=, 1e-3 * fabs (p[i]) + 1e-7);
  /* Nothing left behind but the folder. */
  g_autoptr (GDir) d = g_dir_open (tmp, 0, NULL);
  int entries = 0;
  while (g_dir_read_name (d))
    entries++;
  g_assert_cmpint (entries, ==, 1);

  /* A folder with anything else is not replaced. */
  g_autofree char *extra = g_build_filename (dir, "notes.txt", NULL);
  g_assert_true (g_file_set_contents (extra, "mine", -1, NULL));
  g_assert_false (ddim_convnet_save (net, dir, FALSE, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_true (g_file_test (extra, G_FILE_TEST_EXISTS));
  g_unlink (extra);
  /* Missing parent. */
  g_autofree char *deep = g_build_filename (tmp, "no", "such", NULL);
  g_assert_false (ddim_convnet_save (net, deep, FALSE, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_clear_error (&error);
  /* Missing folder. */
  g_assert_null (ddim_convnet_load (deep, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_clear_error (&error);

  /* Malformed configs. */
  g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
  static const struct { const char *json; int code; } cases[] = {
    { "not json", DDIM_ERROR_FORMAT },
    { "{\"format\": \"other\"}", DDIM_ERROR_FORMAT },
    { "{\"format\": \"ddim-convnet\", \"version\": 2, \"in_channels\": 2, \"layers\": []}",
      DDIM_ERROR_UNSUPPORTED },
    { "{\"format\": \"ddim-convnet\", \"version\": 1, \"in_channels\": 2, \"layers\": [3]}",
      DDIM_ERROR_FORMAT },
    { "{\"format\": \"ddim-convnet\", \"version\": 1, \"in_channels\": 2, "
      "\"layers\": [\"conv 8\", \"gn 3\"]}", DDIM_ERROR_FORMAT },
    { "{\"format\": \"ddim-convnet\", \"version\": 1, \"in_channels\": 2, "
      "\"layers\": [\"conv 9\"]}", DDIM_ERROR_MISMATCH },
    { "{\"format\": \"ddim-convnet\", \"version\": 1, \"in_channels\": 2, "
      "\"layers\": [\"conv 8\", \"gn 4\", \"silu\", \"conv 8 s2\", \"up\", \"add 2\", "
      "\"conv 2\", \"linear 3\"]}", DDIM_ERROR_FORMAT },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_assert_true (g_file_set_contents (cfg, cases[i].json, -1, NULL));
      g_autoptr (DdimConvNet) b = ddim_convnet_load (dir, &error);
      g_assert_null (b);
      g_assert_error (error, DDIM_ERROR, cases[i].code);
      g_test_message ("%s", error->message);
      g_clear_error (&error);
    }
  rm_rf (tmp);
}

/* ---- classifier ---- */

#define SMALL_CLASSIFIER \
  "conv 16 s2, gn 4, silu, conv 32 s2, gn 8, silu, conv 64 s2, gn 8, silu, conv 64 s2, gn 8, " \
  "silu, pool, linear 10"

static void
test_classifier (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDataset) train = ddim_dataset_load_fashion_mnist (NULL, "train", 32, 1, 256,
                                                                   &error);
  if (train == NULL)
    {
      g_test_skip ("Fashion-MNIST not installed (dataset-fashion-mnist)");
      return;
    }
  g_autoptr (DdimDataset) test = ddim_dataset_load_fashion_mnist (NULL, "test", 32, 1, 256,
                                                                  &error);
  g_assert_no_error (error);
  g_autoptr (DdimClassifier) c = ddim_classifier_new (1, 32, SMALL_CLASSIFIER, 1, &error);
  g_assert_no_error (error);
  double acc0;
  g_assert_true (ddim_classifier_evaluate (c, test, &acc0, NULL, &error));
  DdimTrainOptions o;
  ddim_classifier_train_options_init (&o);
  o.steps = 100;
  o.batch_size = 32;
  o.warmup_steps = 10;
  o.lr = 3e-3;
  gint64 t0 = g_get_monotonic_time ();
  g_assert_true (ddim_classifier_train (c, train, &o, &error));
  g_assert_no_error (error);
  double secs = (g_get_monotonic_time () - t0) / 1e6;
  double acc;
  int confusion[100];
  g_assert_true (ddim_classifier_evaluate (c, test, &acc, confusion, &error));
  int total = 0, diag = 0;
  for (int i = 0; i < 100; i++)
    total += confusion[i];
  for (int i = 0; i < 10; i++)
    diag += confusion[i * 11];
  g_assert_cmpint (total, ==, test->n);
  g_assert_cmpfloat (fabs ((double) diag / total - acc), <, 1e-12);
  g_test_message ("classifier: held-out accuracy %.1f%% before, %.1f%% after 100 steps (%.1f s)",
                  100 * acc0, 100 * acc, secs);
  g_assert_cmpfloat (acc, >, 0.45);   /* chance: 10% */
  g_assert_cmpstr (ddim_convnet_get_metadata (ddim_classifier_get_net (c), "train_steps"), ==,
                   "100");

  /* predict: labels = argmax of probabilities that sum to 1. */
  int labels[8];
  float probs[80];
  g_assert_true (ddim_classifier_predict (c, test->images, 8, labels, probs, &error));
  for (int b = 0; b < 8; b++)
    {
      double s = 0;
      int best = 0;
      for (int k = 0; k < 10; k++)
        {
          s += probs[b * 10 + k];
          if (probs[b * 10 + k] > probs[b * 10 + best])
            best = k;
        }
      g_assert_cmpfloat (fabs (s - 1), <, 1e-5);
      g_assert_cmpint (labels[b], ==, best);
    }

  /* Save / load: identical predictions. */
  g_autofree char *tmp = g_dir_make_tmp ("ddim-classifier-XXXXXX", NULL);
  g_autofree char *dir = g_build_filename (tmp, "classifier", NULL);
  g_assert_true (ddim_classifier_save (c, dir, FALSE, &error));
  g_autoptr (DdimClassifier) back = ddim_classifier_load (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ddim_classifier_get_size (back), ==, 32);
  int labels2[8];
  float probs2[80];
  g_assert_true (ddim_classifier_predict (back, test->images, 8, labels2, probs2, &error));
  g_assert_cmpmem (labels, sizeof labels, labels2, sizeof labels2);
  g_assert_cmpmem (probs, sizeof probs, probs2, sizeof probs2);
  /* A classifier folder is not an encoder. */
  g_assert_null (ddim_encoder_load (dir, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_clear_error (&error);
  rm_rf (tmp);

  /* A data set of another size. */
  g_autoptr (DdimDataset) small = ddim_dataset_load_fashion_mnist (NULL, "test", 28, 1, 4,
                                                                   &error);
  g_assert_false (ddim_classifier_evaluate (c, small, &acc, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
}

static void
test_classifier_errors (void)
{
  g_autoptr (GError) error = NULL;
  g_assert_null (ddim_classifier_new (2, 32, NULL, 0, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_null (ddim_classifier_new (1, 32, "conv 8, pool, linear 4", 0, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_null (ddim_classifier_new (1, 32, "conv 8", 0, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_cmpstr (ddim_fashion_mnist_class_name (0), ==, "T-shirt/top");
  g_assert_cmpstr (ddim_fashion_mnist_class_name (9), ==, "Ankle boot");
  g_assert_null (ddim_fashion_mnist_class_name (10));

  g_autoptr (DdimClassifier) c = ddim_classifier_new (1, 16, SMALL_CLASSIFIER, 0, &error);
  g_assert_no_error (error);
  g_assert_false (ddim_classifier_check_input (c, 1, 32, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_clear_error (&error);
  /* No labels; a label out of range. */
  float img[4 * 256] = { 0 };
  guint8 lab[4] = { 0, 1, 12, 3 };
  DdimDataset ds = { 4, 1, 16, img, NULL };
  DdimTrainOptions o;
  ddim_classifier_train_options_init (&o);
  o.steps = 1;
  g_assert_false (ddim_classifier_train (c, &ds, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  ds.labels = lab;
  g_assert_false (ddim_classifier_train (c, &ds, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  lab[2] = 2;
  o.batch_size = 0;
  g_assert_false (ddim_classifier_train (c, &ds, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  o.batch_size = 4;
  g_autoptr (GCancellable) cancel = g_cancellable_new ();
  g_cancellable_cancel (cancel);
  o.cancellable = cancel;
  g_assert_false (ddim_classifier_train (c, &ds, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED);
  g_clear_error (&error);
  g_assert_false (ddim_classifier_predict (c, img, 0, NULL, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_autofree char *tmp = g_dir_make_tmp ("ddim-classifier-XXXXXX", NULL);
  g_assert_null (ddim_classifier_load (tmp, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_clear_error (&error);
  /* A network folder that is not a classifier. */
  g_autofree char *dir = g_build_filename (tmp, "net", NULL);
  g_autoptr (DdimConvNet) net = ddim_convnet_new (1, "conv 4, pool, linear 10", NULL);
  g_assert_true (ddim_convnet_save (net, dir, FALSE, &error));
  g_assert_null (ddim_classifier_load (dir, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT);
  g_clear_error (&error);
  rm_rf (tmp);
}

/* ---- encoder ---- */

#define SMALL_ENCODER \
  "conv 16, gn 4, silu, conv 16 s2, gn 4, silu, up, conv 16, add 2, silu, conv 1"

static DdimModel *
load_fixture (const char *name)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  if (root == NULL)
    return NULL;
  g_autofree char *path = g_build_filename (root, "diffusers", name, NULL);
  g_autoptr (GError) error = NULL;
  DdimModel *m = ddim_model_load (path, &error);
  g_assert_no_error (error);
  return m;
}

static void
test_encoder (void)
{
  g_autoptr (DdimModel) model = load_fixture ("tiny-variant");
  if (model == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  g_autoptr (GError) error = NULL;
  DdimEncoderTrainOptions o;
  ddim_encoder_train_options_init (&o, model->schedule);
  o.ddim_steps = 3;
  o.pairs = 24;
  o.val_pairs = 8;
  o.steps = 40;
  o.batch_size = 8;
  o.lr = 3e-3;
  o.warmup_steps = 5;
  o.arch = SMALL_ENCODER;
  o.seed = 4;
  DdimEncoderTrainStats st = { 0 };
  g_autoptr (DdimEncoder) enc = ddim_encoder_train (model->unet, model->schedule,
                                                    model->weights_sha256, &o, &st, &error);
  g_assert_no_error (error);
  g_test_message ("encoder: held-out MSE %.4f -> %.4f, training loss %.4f; pairs %.2f s, "
                  "training %.2f s", st.val_mse_initial, st.val_mse_final, st.train_loss_final,
                  st.pair_seconds, st.train_seconds);
  g_assert_cmpfloat (st.val_mse_final, <, st.val_mse_initial);
  g_assert_cmpfloat (st.train_loss_final, <, st.val_mse_initial);
  g_assert_cmpint (st.model_evals, ==, 3 * 32);
  g_assert_cmpint (ddim_encoder_get_steps (enc), ==, 3);
  g_assert_cmpint (ddim_encoder_get_size (enc), ==, 32);
  g_assert_cmpint (ddim_encoder_get_spacing (enc), ==, model->schedule->spacing);
  g_assert_cmpstr (ddim_encoder_get_model_sha256 (enc), ==, model->weights_sha256);

  /* An image to invert: a model sample. */
  gsize n = 32 * 32;
  g_autofree float *x0 = g_new (float, n);
  ddim_randn (77, x0, n);
  DdimRunOptions ro;
  ddim_run_options_init (&ro, model->schedule);
  ro.steps = 3;
  g_assert_true (ddim_sample (model->unet, model->schedule, x0, 1, 32, 32, &ro, &error));
  g_autofree float *z = g_new (float, n);
  g_assert_true (ddim_encoder_encode (enc, x0, 1, 32, 32, z, &error));
  /* On the Gaussian shell, |z| = sqrt(n), and a scaled copy of the raw
   * network output. */
  double norm2 = 0;
  for (gsize i = 0; i < n; i++)
    norm2 += (double) z[i] * z[i];
  g_assert_cmpfloat_with_epsilon (sqrt (norm2), sqrt ((double) n), 1e-3 * sqrt ((double) n));
  g_autofree float *raw = g_new (float, n);
  g_assert_true (ddim_convnet_forward (ddim_encoder_get_net (enc), x0, 1, 32, 32, raw, &error));
  double raw2 = 0, dot = 0;
  for (gsize i = 0; i < n; i++)
    {
      raw2 += (double) raw[i] * raw[i];
      dot += (double) raw[i] * z[i];
    }
  g_assert_cmpfloat (dot / sqrt (raw2 * norm2), >, 1 - 1e-6);

  /* Save / load: the same encoding; the model check. */
  g_autofree char *tmp = g_dir_make_tmp ("ddim-encoder-XXXXXX", NULL);
  g_autofree char *dir = g_build_filename (tmp, DDIM_ENCODER_DIR_NAME, NULL);
  g_assert_true (ddim_encoder_save (enc, dir, FALSE, &error));
  g_assert_no_error (error);
  g_autoptr (DdimEncoder) back = ddim_encoder_load (dir, model->weights_sha256, &error);
  g_assert_no_error (error);
  g_autofree float *z2 = g_new (float, n);
  g_assert_true (ddim_encoder_encode (back, x0, 1, 32, 32, z2, &error));
  g_assert_cmpmem (z, n * 4, z2, n * 4);
  g_assert_cmpint (ddim_encoder_get_steps (back), ==, 3);
  g_autoptr (DdimModel) other = load_fixture ("tiny-cifar");
  g_assert_null (ddim_encoder_load (dir, other->weights_sha256, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_test_message ("%s", error->message);
  g_clear_error (&error);
  g_autoptr (DdimEncoder) any = ddim_encoder_load (dir, NULL, &error);
  g_assert_no_error (error);

  /* Method "encoder": the latent is E(x0) and decodes by DDIM. */
  DdimExactOptions ex;
  ddim_exact_options_init (&ex);
  ex.encoder = back;
  DdimExactStats es = { 0 };
  g_autoptr (DdimLatent) l = ddim_invert_with_method (model->unet, model->schedule, x0, 32, 32,
                                                      DDIM_METHOD_ENCODER, &ex, &ro, &es,
                                                      &error);
  g_assert_no_error (error);
  g_assert_cmpstr (l->method, ==, "encoder");
  g_assert_cmpint (l->steps, ==, 3);
  g_assert_cmpint (es.model_evals, ==, 0);
  g_assert_cmpmem (l->latent, n * 4, z, n * 4);
  g_assert_true (ddim_latent_check_method (l, DDIM_METHOD_DDIM, &error));
  g_autofree float *rec = g_new (float, n);
  g_assert_true (ddim_reconstruct_latent (model->unet, model->schedule, l, rec, NULL, &es,
                                          &error));
  g_assert_no_error (error);
  g_autofree float *direct = g_memdup2 (z, n * 4);
  g_assert_true (ddim_sample (model->unet, model->schedule, direct, 1, 32, 32, &ro, &error));
  g_assert_cmpmem (rec, n * 4, direct, n * 4);
  g_test_message ("encoder latent decodes to PSNR %.2f dB", ddim_psnr (rec, x0, n));
  /* Through the latent file. */
  GBytes *bytes = ddim_latent_to_bytes (l);
  g_autoptr (DdimLatent) l2 = ddim_latent_new_from_bytes (bytes, NULL, &error);
  g_bytes_unref (bytes);
  g_assert_no_error (error);
  g_assert_cmpstr (l2->method, ==, "encoder");

  /* Hybrid from the encoder: 0 iterations keep its start. */
  DdimOptimizeOptions oo;
  ddim_optimize_options_init (&oo);
  oo.iterations = 0;
  oo.prior_weight = 0;   /* the best iterate is then the best reconstruction */
  ex.optimize = &oo;
  g_autoptr (DdimLatent) h = ddim_invert_with_method (model->unet, model->schedule, x0, 32, 32,
                                                      DDIM_METHOD_HYBRID, &ex, &ro, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (h->latent, n * 4, z, n * 4);
  /* ... and 2 iterations do not get worse. */
  oo.iterations = 2;
  g_autoptr (DdimLatent) h2 = ddim_invert_with_method (model->unet, model->schedule, x0, 32, 32,
                                                       DDIM_METHOD_HYBRID, &ex, &ro, NULL,
                                                       &error);
  g_assert_no_error (error);
  g_autofree float *rec2 = g_new (float, n);
  g_assert_true (ddim_reconstruct_latent (model->unet, model->schedule, h2, rec2, NULL, NULL,
                                          &error));
  g_assert_cmpfloat (ddim_psnr (rec2, x0, n), >=, ddim_psnr (rec, x0, n) - 1e-3);

  /* Errors: no encoder, other steps, a size it cannot take. */
  ex.encoder = NULL;
  g_assert_null (ddim_invert_with_method (model->unet, model->schedule, x0, 32, 32,
                                          DDIM_METHOD_ENCODER, &ex, &ro, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  ex.encoder = back;
  ro.steps = 4;
  g_assert_null (ddim_invert_with_method (model->unet, model->schedule, x0, 32, 32,
                                          DDIM_METHOD_ENCODER, &ex, &ro, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_clear_error (&error);
  g_assert_false (ddim_encoder_encode (back, x0, 1, 30, 30, z2, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  DdimInversionMethod m;
  g_assert_true (ddim_inversion_method_from_string ("encoder", &m, NULL));
  g_assert_cmpint (m, ==, DDIM_METHOD_ENCODER);
  g_assert_cmpint (ddim_inversion_method_decoder (m), ==, DDIM_METHOD_DDIM);
  g_assert_false (ddim_inversion_method_is_pair (m));

  /* An encoder for a 3-channel model cannot invert the 1-channel one. */
  DdimEncoderTrainOptions o3 = o;
  o3.pairs = 1;
  o3.val_pairs = 1;
  o3.steps = 0;
  o3.ddim_steps = 1;
  o3.arch = NULL;   /* the default network */
  g_autoptr (DdimEncoder) enc3 = ddim_encoder_train (other->unet, other->schedule,
                                                     other->weights_sha256, &o3, NULL, &error);
  g_assert_no_error (error);
  ex.encoder = enc3;
  ro.steps = 1;
  g_assert_null (ddim_invert_with_method (model->unet, model->schedule, x0, 32, 32,
                                          DDIM_METHOD_ENCODER, &ex, &ro, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
  g_clear_error (&error);
  rm_rf (tmp);
}

static void
test_encoder_errors (void)
{
  g_autoptr (DdimModel) model = load_fixture ("tiny-variant");
  if (model == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  g_autoptr (GError) error = NULL;
  DdimEncoderTrainOptions o;
  ddim_encoder_train_options_init (&o, model->schedule);
  g_assert_cmpint (o.ddim_steps, ==, 20);
  o.pairs = 2;
  o.val_pairs = 1;
  o.steps = 1;
  o.ddim_steps = 1;
  struct { const char *field; int *value; int bad; } ints[] = {
    { "ddim_steps", &o.ddim_steps, 0 }, { "ddim_steps", &o.ddim_steps, 100000 },
    { "pairs", &o.pairs, 0 }, { "val_pairs", &o.val_pairs, 0 }, { "steps", &o.steps, -1 },
    { "batch", &o.batch_size, 0 }, { "size", &o.size, 30 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (ints); i++)
    {
      int keep = *ints[i].value;
      *ints[i].value = ints[i].bad;
      g_assert_null (ddim_encoder_train (model->unet, model->schedule, "00", &o, NULL, &error));
      g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
      g_clear_error (&error);
      *ints[i].value = keep;
    }
  /* A network that is not shape-preserving. */
  o.arch = "conv 8 s2, conv 1";
  g_assert_null (ddim_encoder_train (model->unet, model->schedule, "00", &o, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  o.arch = NULL;
  g_autoptr (GCancellable) cancel = g_cancellable_new ();
  g_cancellable_cancel (cancel);
  o.cancellable = cancel;
  g_assert_null (ddim_encoder_train (model->unet, model->schedule, "00", &o, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED);
  g_clear_error (&error);
  g_autofree char *tmp = g_dir_make_tmp ("ddim-encoder-XXXXXX", NULL);
  g_assert_null (ddim_encoder_load (tmp, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_IO);
  g_clear_error (&error);
  g_autofree char *arch = ddim_encoder_default_arch (3);
  g_autoptr (DdimConvNet) net = ddim_convnet_new (3, arch, &error);
  g_assert_no_error (error);
  int oh, ow;
  g_assert_true (ddim_convnet_output_size (net, 32, 32, &oh, &ow, &error));
  g_assert_cmpint (oh, ==, 32);
  g_assert_cmpint (ddim_convnet_get_out_channels (net), ==, 3);
  rm_rf (tmp);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/convnet/gradients", test_gradients);
  g_test_add_func ("/convnet/arch", test_arch);
  g_test_add_func ("/convnet/init", test_init);
  g_test_add_func ("/convnet/trainer", test_trainer);
  g_test_add_func ("/convnet/save-load", test_save_load);
  g_test_add_func ("/classifier/train", test_classifier);
  g_test_add_func ("/classifier/errors", test_classifier_errors);
  g_test_add_func ("/encoder/train", test_encoder);
  g_test_add_func ("/encoder/errors", test_encoder_errors);
  return g_test_run ();
}
