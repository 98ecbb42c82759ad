/* Class directions and their evaluation (issue #5): fitting one direction
 * per class, merging directions files, the changed-shape mask and the
 * outside PSNR of an edit, deterministic picks from a labelled set, and
 * the errors of 'ddim directions fit --by-class', 'merge', 'set-range' and
 * 'ddim eval-edit' as a user meets them (the tool comes from DDIM_CLI). */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "ddim/ddim.h"

#include "cli-run.h"

#define N_CLASSES DDIM_FASHION_MNIST_N_CLASSES

static DdimModel *
load_fixture (const char *name)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  if (root == NULL)
    return NULL;
  g_autofree char *dir = g_build_filename (root, "diffusers", name, NULL);
  g_autoptr (GError) error = NULL;
  DdimModel *m = ddim_model_load (dir, &error);
  g_assert_no_error (error);
  return m;
}

static char *
fixture_dir (const char *name)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  return root ? g_build_filename (root, "diffusers", name, NULL) : NULL;
}

#define REQUIRE_FIXTURE(var, name)                              \
  g_autoptr (DdimModel) var = load_fixture (name);              \
  if (var == NULL)                                              \
    {                                                           \
      g_test_skip ("DDIM_FIXTURES_DIR not set");                \
      return;                                                   \
    }

static double
norm (const float *x, gsize n)
{
  double s = 0;
  for (gsize i = 0; i < n; i++)
    s += (double) x[i] * x[i];
  return sqrt (s);
}

static double
max_abs_diff (const float *a, const float *b, gsize n)
{
  double m = 0;
  for (gsize i = 0; i < n; i++)
    m = MAX (m, fabs ((double) a[i] - b[i]));
  return m;
}

/* ---- fitting one direction per class ---- */

/* A labelled set of latents for @m: class 0 has two examples, every other
 * class one (so that a class-balanced negative mean differs from the plain
 * mean of the negatives). */
#define N_EXAMPLES (N_CLASSES + 1)
static const int example_labels[N_EXAMPLES] = { 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };

static float *
make_latents (DdimModel *m)
{
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  gsize per = (gsize) c->in_channels * c->sample_size * c->sample_size;
  float *x = g_new (float, N_EXAMPLES * per);
  ddim_randn (7, x, N_EXAMPLES * per);
  return x;
}

static void
fit_options (DdimModel *m, DdimFitOptions *o)
{
  ddim_fit_options_init (o, m->schedule);
  o->run.steps = 4;
  o->latents = TRUE;   /* no inversion: the test is about the statistics */
  o->t_min = 300;
  o->t_max = 999;
}

static void
test_fit_classes (void)
{
  REQUIRE_FIXTURE (m, "tiny-variant");
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  int S = c->sample_size, hc, hh, hw;
  ddim_unet_hspace_shape (m->unet, S, S, &hc, &hh, &hw);
  gsize per = (gsize) c->in_channels * S * S, D = (gsize) hc * hh * hw;
  g_autofree float *x = make_latents (m);
  const char *names[N_CLASSES], *descriptions[N_CLASSES];
  for (int k = 0; k < N_CLASSES; k++)
    {
      names[k] = ddim_fashion_mnist_class_slug (k);
      descriptions[k] = names[k];
    }
  DdimFitOptions o;
  fit_options (m, &o);
  o.model_sha256 = m->weights_sha256;
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDirectionSet) set = ddim_fit_class_directions (
      m->unet, m->schedule, x, example_labels, N_EXAMPLES, N_CLASSES, names, descriptions, S, S,
      &o, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_direction_set_get_n (set), ==, N_CLASSES);
  for (int k = 0; k < N_CLASSES; k++)
    {
      const DdimDirection *d = ddim_direction_set_get_nth (set, k);
      g_assert_cmpstr (d->name, ==, names[k]);
      g_assert_cmpstr (d->description, ==, names[k]);
      g_assert_cmpint (d->kind, ==, DDIM_DIRECTION_SUPERVISED);
      g_assert_cmpint (d->space, ==, DDIM_SPACE_H);
      g_assert_cmpint (d->ndim, ==, 3);
      g_assert_cmpint (d->channels, ==, hc);
      g_assert_cmpint (d->height, ==, hh);
      g_assert_cmpint (d->width, ==, hw);
      g_assert_cmpint (d->t_min, ==, 300);
      g_assert_cmpint (d->t_max, ==, 999);
      g_assert_cmpstr (d->model_sha256, ==, m->weights_sha256);
      g_assert_cmpfloat_with_epsilon (norm (d->data, D), 1.0, 1e-5);
      g_assert_cmpfloat (d->sigma, >, 0);
      g_assert_cmpfloat_with_epsilon (d->strength_max, 2 * d->sigma, 1e-9 * d->sigma);
      g_assert_true (ddim_direction_check (d, m->unet, m->weights_sha256, S, S, &error));
      g_assert_no_error (error);
    }
  /* Class names in the file in class order, and distinct directions. */
  g_autofree char *list = ddim_direction_set_list_names (set);
  g_assert_cmpstr (list, ==, "t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, "
                             "bag, ankle-boot");
  g_assert_cmpfloat (max_abs_diff (ddim_direction_set_get_nth (set, 1)->data,
                                   ddim_direction_set_get_nth (set, 2)->data, D), >, 1e-3);

  /* Prototypes: class 0 has two examples, so its prototype (one of them)
   * differs from its mean difference; class 5 has one, so they agree. */
  DdimFitOptions op = o;
  op.method = DDIM_FIT_PROTOTYPE;
  g_autoptr (DdimDirectionSet) protos = ddim_fit_class_directions (
      m->unet, m->schedule, x, example_labels, N_EXAMPLES, N_CLASSES, names, descriptions, S, S,
      &op, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (max_abs_diff (ddim_direction_set_get_nth (protos, 0)->data,
                                   ddim_direction_set_get_nth (set, 0)->data, D), >, 1e-3);
  g_assert_cmpfloat (max_abs_diff (ddim_direction_set_get_nth (protos, 5)->data,
                                   ddim_direction_set_get_nth (set, 5)->data, D), <, 1e-6);

  /* Independently: a class direction (mean difference or prototype) is the
   * one-direction fit with that class as positives and the others as
   * negatives, every other class weighing the same. Class 5 has one
   * example and class 0 two among its negatives, so the negatives get
   * class 1..9 twice (class 0 as is) to weigh the same in the plain mean
   * ddim_fit_direction takes. */
  for (int k = 0; k < N_CLASSES; k += 5)
    {
      g_autofree float *pos = g_new (float, N_EXAMPLES * per);
      g_autofree float *neg = g_new (float, 2 * N_EXAMPLES * per);
      int np = 0, nn = 0;
      for (int i = 0; i < N_EXAMPLES; i++)
        {
          const float *xi = x + (gsize) i * per;
          int copies = example_labels[i] == 0 ? 1 : 2;
          if (example_labels[i] == k)
            memcpy (pos + (gsize) np++ * per, xi, per * sizeof (float));
          else
            for (int r = 0; r < copies; r++)
              memcpy (neg + (gsize) nn++ * per, xi, per * sizeof (float));
        }
      for (int v = 0; v < 2; v++)
        {
          g_autoptr (DdimDirection) ref = ddim_fit_direction (
              m->unet, m->schedule, "ref", pos, np, neg, nn, S, S, v ? &op : &o, &error);
          g_assert_no_error (error);
          const DdimDirection *d = ddim_direction_set_get_nth (v ? protos : set, k);
          g_assert_cmpfloat (max_abs_diff (d->data, ref->data, D), <, 1e-5);
          g_assert_cmpfloat_with_epsilon (d->sigma, ref->sigma, 1e-6 * ref->sigma);
        }
    }

  /* Only some classes fitted; logistic directions are unit vectors that
   * separate too. */
  const char *some[N_CLASSES] = { NULL };
  some[7] = "sneaker";
  some[3] = "dress";
  o.method = DDIM_FIT_LOGISTIC;
  o.iterations = 50;
  g_autoptr (DdimDirectionSet) two = ddim_fit_class_directions (
      m->unet, m->schedule, x, example_labels, N_EXAMPLES, N_CLASSES, some, NULL, S, S, &o,
      &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_direction_set_get_n (two), ==, 2);
  g_assert_cmpstr (ddim_direction_set_get_nth (two, 0)->name, ==, "dress");
  g_assert_cmpstr (ddim_direction_set_get_nth (two, 1)->name, ==, "sneaker");
  for (int i = 0; i < 2; i++)
    {
      const DdimDirection *d = ddim_direction_set_get_nth (two, i);
      g_assert_cmpfloat_with_epsilon (norm (d->data, D), 1.0, 1e-5);
      g_assert_cmpfloat (d->sigma, >, 0);
      g_assert_cmpstr (d->description, ==, "");
    }
}

static void
test_fit_classes_errors (void)
{
  REQUIRE_FIXTURE (m, "tiny-variant");
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  int S = c->sample_size;
  g_autofree float *x = make_latents (m);
  const char *names[N_CLASSES];
  for (int k = 0; k < N_CLASSES; k++)
    names[k] = ddim_fashion_mnist_class_slug (k);
  DdimFitOptions o;
  fit_options (m, &o);
  g_autoptr (GError) error = NULL;

  /* A class without examples: class 9 is missing from the first ten. */
  g_assert_null (ddim_fit_class_directions (m->unet, m->schedule, x, example_labels,
                                            N_EXAMPLES - 1, N_CLASSES, names, NULL, S, S, &o,
                                            &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "class 9 (ankle-boot) has no examples"));
  g_clear_error (&error);

  int bad_labels[N_EXAMPLES];
  memcpy (bad_labels, example_labels, sizeof bad_labels);
  bad_labels[4] = 10;
  g_assert_null (ddim_fit_class_directions (m->unet, m->schedule, x, bad_labels, N_EXAMPLES,
                                            N_CLASSES, names, NULL, S, S, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "label 10, outside 0..9"));
  g_clear_error (&error);

  const char *none[N_CLASSES] = { NULL };
  g_assert_null (ddim_fit_class_directions (m->unet, m->schedule, x, example_labels, N_EXAMPLES,
                                            N_CLASSES, none, NULL, S, S, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "no class"));
  g_clear_error (&error);

  const char *twice[N_CLASSES] = { "a", "b", "a" };
  g_assert_null (ddim_fit_class_directions (m->unet, m->schedule, x, example_labels, N_EXAMPLES,
                                            N_CLASSES, twice, NULL, S, S, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "same direction name 'a'"));
  g_clear_error (&error);

  g_assert_null (ddim_fit_class_directions (m->unet, m->schedule, x, example_labels, N_EXAMPLES,
                                            1, names, NULL, S, S, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
}

/* ---- class names and picks from a labelled set ---- */

static void
test_class_names (void)
{
  g_autoptr (GError) error = NULL;
  int label = -1;
  for (int k = 0; k < N_CLASSES; k++)
    {
      const char *slug = ddim_fashion_mnist_class_slug (k);
      g_assert_true (ddim_direction_name_is_valid (slug, NULL));
      for (const char *p = slug; *p; p++)
        g_assert_true (g_ascii_islower (*p) || *p == '-');
      g_assert_true (ddim_fashion_mnist_class_from_name (slug, &label, &error));
      g_assert_no_error (error);
      g_assert_cmpint (label, ==, k);
      g_assert_true (ddim_fashion_mnist_class_from_name (ddim_fashion_mnist_class_name (k),
                                                         &label, NULL));
      g_assert_cmpint (label, ==, k);
    }
  g_assert_cmpstr (ddim_fashion_mnist_class_slug (0), ==, "t-shirt");
  g_assert_cmpstr (ddim_fashion_mnist_class_slug (9), ==, "ankle-boot");
  g_assert_null (ddim_fashion_mnist_class_slug (10));
  g_assert_true (ddim_fashion_mnist_class_from_name ("SNEAKER", &label, NULL));
  g_assert_cmpint (label, ==, 7);

  label = -1;
  g_assert_false (ddim_fashion_mnist_class_from_name ("sneakers", &label, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "'sneakers' is not a Fashion-MNIST class"));
  g_assert_nonnull (strstr (error->message, "ankle-boot"));
  g_assert_cmpint (label, ==, -1);
}

static void
test_dataset_picks (void)
{
  static const guint8 labels[] = { 3, 1, 3, 0, 3, 2, 1, 3 };
  DdimDataset ds = { G_N_ELEMENTS (labels), 1, 2, NULL, (guint8 *) labels };
  ds.images = g_new (float, ds.n * 4);
  for (int i = 0; i < ds.n * 4; i++)
    ds.images[i] = (float) i;
  g_autoptr (GError) error = NULL;

  g_autofree int *of3 = ddim_dataset_find_labels (&ds, 3, FALSE, 3, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (of3, 3 * sizeof (int), ((int[]){ 0, 2, 4 }), 3 * sizeof (int));
  g_autofree int *not3 = ddim_dataset_find_labels (&ds, 3, TRUE, 4, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (not3, 4 * sizeof (int), ((int[]){ 1, 3, 5, 6 }), 4 * sizeof (int));

  g_autofree float *g = ddim_dataset_gather (&ds, not3, 2);
  g_assert_cmpfloat (g[0], ==, 4);
  g_assert_cmpfloat (g[3], ==, 7);
  g_assert_cmpfloat (g[4], ==, 12);

  g_assert_null (ddim_dataset_find_labels (&ds, 3, TRUE, 5, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "only 4"));
  g_clear_error (&error);
  g_assert_null (ddim_dataset_find_labels (&ds, 0, FALSE, 0, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "at least 1, not 0"));
  g_clear_error (&error);
  ds.labels = NULL;
  g_assert_null (ddim_dataset_find_labels (&ds, 0, FALSE, 1, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "no labels"));
  g_free (ds.images);
}

/* ---- merging ---- */

static DdimDirection *
direction (const char *name, DdimDirectionSpace space, int ndim, int c, int h, int w,
           const char *sha)
{
  DdimDirection *d = ddim_direction_new (name, space, ndim, c, h, w);
  d->data[0] = 1;
  g_free (d->model_sha256);
  d->model_sha256 = g_strdup (sha);
  return d;
}

static void
test_merge (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimDirectionSet) all = ddim_direction_set_new ();
  g_autoptr (DdimDirectionSet) classes = ddim_direction_set_new ();
  ddim_direction_set_add (classes, direction ("sneaker", DDIM_SPACE_H, 3, 64, 8, 8, "aa"));
  ddim_direction_set_add (classes, direction ("bag", DDIM_SPACE_H, 3, 64, 8, 8, "aa"));
  g_autoptr (DdimDirectionSet) pca = ddim_direction_set_new ();
  ddim_direction_set_add (pca, direction ("pca-1", DDIM_SPACE_H, 3, 64, 8, 8, ""));
  ddim_direction_set_add (pca, direction ("pooled", DDIM_SPACE_H, 1, 64, 0, 0, "aa"));
  ddim_direction_set_add (pca, direction ("x-1", DDIM_SPACE_X, 3, 1, 32, 32, "aa"));
  g_assert_true (ddim_direction_set_merge_strict (all, classes, "classes", &error));
  g_assert_no_error (error);
  g_assert_true (ddim_direction_set_merge_strict (all, pca, "pca", &error));
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_direction_set_get_n (all), ==, 5);
  g_autofree char *names = ddim_direction_set_list_names (all);
  g_assert_cmpstr (names, ==, "sneaker, bag, pca-1, pooled, x-1");

  /* A second 'bag' would replace the first: refused, nothing added. */
  g_autoptr (DdimDirectionSet) dup = ddim_direction_set_new ();
  ddim_direction_set_add (dup, direction ("new", DDIM_SPACE_H, 3, 64, 8, 8, "aa"));
  ddim_direction_set_add (dup, direction ("bag", DDIM_SPACE_H, 3, 64, 8, 8, "aa"));
  g_assert_false (ddim_direction_set_merge_strict (all, dup, "dup.safetensors", &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "dup.safetensors"));
  g_assert_nonnull (strstr (error->message, "'bag' is already there"));
  g_clear_error (&error);
  g_assert_cmpuint (ddim_direction_set_get_n (all), ==, 5);

  /* Shapes another model's: h channels, full h shape, x channels, and
   * another model's weights. */
  struct {
    DdimDirection *d;
    const char    *says;
  } bad[] = {
    { direction ("c", DDIM_SPACE_H, 3, 32, 8, 8, "aa"), "[32, 8, 8]" },
    { direction ("c", DDIM_SPACE_H, 3, 64, 4, 4, ""), "[64, 4, 4]" },
    { direction ("c", DDIM_SPACE_H, 1, 128, 0, 0, ""), "[128]" },
    { direction ("c", DDIM_SPACE_X, 3, 3, 32, 32, "aa"), "[3, 32, 32]" },
    { direction ("c", DDIM_SPACE_H, 3, 64, 8, 8, "bb"), "another model" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (DdimDirectionSet) one = ddim_direction_set_new ();
      ddim_direction_set_add (one, bad[i].d);
      g_assert_false (ddim_direction_set_merge_strict (all, one, NULL, &error));
      g_assert_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH);
      g_assert_nonnull (strstr (error->message, bad[i].says));
      g_clear_error (&error);
      g_assert_cmpuint (ddim_direction_set_get_n (all), ==, 5);
    }
}

/* ---- the changed shape and the outside PSNR ---- */

/* A 6x6 gray image, background -1, with @n (row, column, value) pixels. */
static void
paint (float *img, const int (*px)[2], const float *values, int n)
{
  for (int i = 0; i < 36; i++)
    img[i] = -1.f;
  for (int i = 0; i < n; i++)
    img[px[i][0] * 6 + px[i][1]] = values[i];
}

static void
test_shape_mask (void)
{
  float src[36], edit[36];
  paint (src, (const int[][2]){ { 1, 1 } }, (const float[]){ 1.f }, 1);
  /* The edit: the shape moved to (4,4), a bright speck at (3,0) (above
   * the threshold: part of the shape) and a faint one at (0,5) (below it:
   * a background change). */
  paint (edit, (const int[][2]){ { 4, 4 }, { 3, 0 }, { 0, 5 } },
         (const float[]){ 0.5f, -0.5f, -0.9f }, 3);
  /* Worked out by hand: the 3x3 squares around (1,1), (4,4) and (3,0). */
  static const char *const expected =
      "xxx..."
      "xxx..."
      "xxx..."
      "xx.xxx"
      "xx.xxx"
      "...xxx";
  guint8 mask[36];
  gsize inside = ddim_changed_shape_mask (src, edit, 1, 6, 6, DDIM_EDIT_SCORE_THRESHOLD, 1,
                                          mask);
  g_assert_cmpuint (inside, ==, 22);
  for (int i = 0; i < 36; i++)
    g_assert_cmpint (mask[i], ==, expected[i] == 'x');
  /* Undilated: the three foreground pixels only. */
  g_assert_cmpuint (ddim_changed_shape_mask (src, edit, 1, 6, 6, -0.8, 0, mask), ==, 3);
  g_assert_true (mask[1 * 6 + 1] && mask[4 * 6 + 4] && mask[3 * 6 + 0] && !mask[5]);
  /* Any channel counts: a shape only in the second channel. */
  float two[72], two_b[72];
  for (int i = 0; i < 72; i++)
    two[i] = two_b[i] = -1.f;
  two[36 + 2 * 6 + 3] = 0.f;
  g_assert_cmpuint (ddim_changed_shape_mask (two, two_b, 2, 6, 6, -0.8, 1, mask), ==, 9);

  /* The score of that pair: one outside difference of 0.1 on [-1, 1],
   * 0.05 on [0, 1], among 14 outside pixels. */
  DdimEditScore s;
  ddim_edit_score_init (&s, DDIM_EDIT_SCORE_THRESHOLD, DDIM_EDIT_SCORE_DILATE);
  int predicted = 7;
  ddim_edit_score_add (&s, src, edit, &predicted, 7, 1, 1, 6, 6);
  g_assert_cmpint (s.n, ==, 1);
  g_assert_cmpuint (s.n_outside, ==, 14);
  g_assert_cmpfloat_with_epsilon (ddim_edit_score_psnr (&s), 10 * log10 (14 / 0.0025), 1e-4);
  g_assert_cmpfloat_with_epsilon (ddim_edit_score_inside_share (&s), 22 / 36.0, 1e-12);
  g_assert_cmpfloat (ddim_edit_score_success (&s), ==, 1.0);

  /* Pooled with an untouched image (src vs src: the 3x3 square inside,
   * 27 outside, no error) and two more edits classified otherwise. */
  float pairs_src[3 * 36], pairs_edit[3 * 36];
  memcpy (pairs_src, src, sizeof src);
  memcpy (pairs_edit, src, sizeof src);
  memcpy (pairs_src + 36, src, sizeof src);
  memcpy (pairs_edit + 36, edit, sizeof edit);
  memcpy (pairs_src + 72, src, sizeof src);
  memcpy (pairs_edit + 72, edit, sizeof edit);
  int labels[3] = { 7, 2, 0 };
  ddim_edit_score_add (&s, pairs_src, pairs_edit, labels, 7, 3, 1, 6, 6);
  g_assert_cmpint (s.n, ==, 4);
  g_assert_cmpint (s.n_success, ==, 2);
  g_assert_cmpfloat (ddim_edit_score_success (&s), ==, 0.5);
  g_assert_cmpuint (s.n_outside, ==, 14 + 27 + 14 + 14);
  g_assert_cmpfloat_with_epsilon (ddim_edit_score_psnr (&s),
                                  10 * log10 ((14 + 27 + 14 + 14) / (3 * 0.0025)), 1e-4);
  g_assert_cmpfloat_with_epsilon (ddim_edit_score_inside_share (&s), (3 * 22 + 9) / 144.0,
                                  1e-12);

  /* Unclassified images leave the success alone; an unchanged outside is
   * infinitely good; no outside at all has no PSNR. */
  DdimEditScore u;
  ddim_edit_score_init (&u, DDIM_EDIT_SCORE_THRESHOLD, DDIM_EDIT_SCORE_DILATE);
  g_assert_true (isnan (ddim_edit_score_success (&u)));
  g_assert_true (isnan (ddim_edit_score_psnr (&u)));
  ddim_edit_score_add (&u, src, src, NULL, 0, 1, 1, 6, 6);
  g_assert_true (isnan (ddim_edit_score_success (&u)));
  g_assert_true (isinf (ddim_edit_score_psnr (&u)));
  float full[36];
  for (int i = 0; i < 36; i++)
    full[i] = 1.f;
  DdimEditScore f;
  ddim_edit_score_init (&f, DDIM_EDIT_SCORE_THRESHOLD, DDIM_EDIT_SCORE_DILATE);
  ddim_edit_score_add (&f, full, src, NULL, 0, 1, 1, 6, 6);
  g_assert_true (isnan (ddim_edit_score_psnr (&f)));
  g_assert_cmpfloat (ddim_edit_score_inside_share (&f), ==, 1.0);
}

/* ---- the command line ---- */

static void
expect_failure (const char *const *args, int status, const char *says)
{
  CliRun r = { 0 };
  cli_run (&r, NULL, args);
  if (r.status != status || strstr (r.err, says) == NULL)
    g_error ("ddim %s ...: status %d, stderr:\n%s\n(expected status %d and '%s')", args[0],
             r.status, r.err, status, says);
  cli_run_clear (&r);
}

static gboolean
have_fashion_mnist (void)
{
  g_autofree char *test = g_build_filename (ddim_dataset_default_fashion_mnist_dir (),
                                            "t10k-labels-idx1-ubyte.gz", NULL);
  g_autofree char *train = g_build_filename (ddim_dataset_default_fashion_mnist_dir (),
                                             "train-labels-idx1-ubyte.gz", NULL);
  return g_file_test (test, G_FILE_TEST_EXISTS) && g_file_test (train, G_FILE_TEST_EXISTS);
}

/* Bad input to the class commands, found before any long work. */
static void
test_cli_errors (void)
{
  g_autofree char *variant = fixture_dir ("tiny-variant");
  if (variant == NULL || g_getenv ("DDIM_CLI") == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR or DDIM_CLI not set");
      return;
    }
  REQUIRE_FIXTURE (m, "tiny-variant");
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("test-class-directions-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *out = g_build_filename (dir, "d.safetensors", NULL);
  g_autofree char *other = g_build_filename (dir, "e.safetensors", NULL);
  g_autofree char *small = g_build_filename (dir, "classifier-28", NULL);
  const char *classifier = g_getenv ("DDIM_CLASSIFIER");

  expect_failure ((const char *[]){ "directions", "fit", variant, "--by-class", "--data",
                                    "fashion-mnist", "--per-class", "0", "-o", out, NULL },
                  2, "--per-class must be");
  expect_failure ((const char *[]){ "directions", "fit", variant, "--by-class", "-o", out, NULL },
                  2, "--by-class needs --data");
  expect_failure ((const char *[]){ "directions", "fit", variant, "--data", "fashion-mnist",
                                    "-o", out, NULL },
                  2, "go with --by-class");
  expect_failure ((const char *[]){ "directions", "fit", variant, "--by-class", "--data",
                                    "fashion-mnist", "--classes", "sneaker,sneakers", "-o", out,
                                    NULL },
                  2, "'sneakers' is not a Fashion-MNIST class");
  expect_failure ((const char *[]){ "directions", "fit", variant, "--by-class", "--data",
                                    "mnist", "-o", out, NULL },
                  1, "--data must be a labelled set");
  expect_failure ((const char *[]){ "directions", "fit", variant, "--by-class", "--data",
                                    "fashion-mnist", "--method", "medoid", "-o", out, NULL },
                  2, "not one of mean-difference, logistic, prototype");

  /* A directions file with one class direction, and one with a name
   * clash. */
  const DdimUNetConfig *c = ddim_unet_get_config (m->unet);
  int hc, hh, hw;
  ddim_unet_hspace_shape (m->unet, c->sample_size, c->sample_size, &hc, &hh, &hw);
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  DdimDirection *d = ddim_direction_new ("sneaker", DDIM_SPACE_H, 3, hc, hh, hw);
  d->data[0] = 1;
  d->strength_min = -1;
  d->strength_max = 1;
  ddim_direction_set_add (set, d);
  g_assert_true (ddim_direction_set_save (set, out, &error));
  g_assert_true (ddim_direction_set_save (set, other, &error));
  g_assert_no_error (error);

  g_autofree char *merged = g_build_filename (dir, "merged.safetensors", NULL);
  expect_failure ((const char *[]){ "directions", "merge", out, other, "-o", merged, NULL }, 1,
                  "'sneaker' is already there");
  g_assert_false (g_file_test (merged, G_FILE_TEST_EXISTS));
  expect_failure ((const char *[]){ "directions", "set-range", out, "sneaker", "--min", "3",
                                    "--max", "2", NULL },
                  2, "would be empty");
  expect_failure ((const char *[]){ "directions", "set-range", out, "bag", "--max", "2", NULL },
                  1, "sneaker");
  CliRun r = { 0 };
  cli_run (&r, NULL, (const char *[]){ "directions", "set-range", out, "sneaker", "--max", "2.5",
                                        NULL });
  g_assert_cmpint (r.status, ==, 0);
  cli_run_clear (&r);
  g_autoptr (DdimDirectionSet) back = ddim_direction_set_load (out, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (ddim_direction_set_get_nth (back, 0)->strength_min, ==, -1);
  g_assert_cmpfloat (ddim_direction_set_get_nth (back, 0)->strength_max, ==, 2.5);

  if (classifier)
    {
      expect_failure ((const char *[]){ "eval-edit", variant, "--classifier", classifier,
                                        "--directions", out, "--classes", "sneakers", NULL },
                      1, "'sneakers' is not a Fashion-MNIST class");
      expect_failure ((const char *[]){ "eval-edit", variant, "--classifier", classifier,
                                        "--directions", out, "--classes", "bag", NULL },
                      1, "sneaker");
      expect_failure ((const char *[]){ "eval-edit", variant, "--classifier", classifier,
                                        "--directions", out, "--per-class", "0", NULL },
                      2, "--per-class must be");
    }
  /* A classifier of 28x28 images cannot judge a 32x32 model. */
  g_autoptr (DdimClassifier) c28 = ddim_classifier_new (1, 28, NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_true (ddim_classifier_save (c28, small, FALSE, &error));
  g_assert_no_error (error);
  expect_failure ((const char *[]){ "eval-edit", variant, "--classifier", small, "--directions",
                                    out, NULL },
                  1, "takes 1-channel 28x28 images");

  for (const char *const *f = (const char *[]){ out, other, NULL }; *f; f++)
    g_unlink (*f);
  g_autofree char *cfg = g_build_filename (small, "config.json", NULL);
  g_autofree char *weights = g_build_filename (small, "model.safetensors", NULL);
  g_unlink (cfg);
  g_unlink (weights);
  g_rmdir (small);
  g_rmdir (dir);
}

/* fit --by-class (per-timestep prototypes, as the default model's), merge
 * and eval-edit end to end on
 * Fashion-MNIST, tiny: the numbers of a random-weights model mean nothing,
 * the plumbing does. */
static void
test_cli_end_to_end (void)
{
  g_autofree char *variant = fixture_dir ("tiny-variant");
  const char *classifier = g_getenv ("DDIM_CLASSIFIER");
  if (variant == NULL || g_getenv ("DDIM_CLI") == NULL || classifier == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR, DDIM_CLI or DDIM_CLASSIFIER not set");
      return;
    }
  if (!have_fashion_mnist ())
    {
      g_test_skip ("Fashion-MNIST (dataset-fashion-mnist) not installed");
      return;
    }
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("test-class-directions-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *classes = g_build_filename (dir, "classes.safetensors", NULL);
  g_autofree char *pca = g_build_filename (dir, "pca.safetensors", NULL);
  g_autofree char *all = g_build_filename (dir, "all.safetensors", NULL);
  g_autofree char *grid = g_build_filename (dir, "grid.png", NULL);

  CliRun r = { 0 };
  /* Per timestep: 4 steps (timesteps 750, 500, 250, 0) have 2 in the
   * default interval [500, 999]; the edits below run 2 steps, between and
   * beyond them. */
  cli_run (&r, NULL, (const char *[]){ "directions", "fit", variant, "--by-class", "--data",
                                        "fashion-mnist-test", "--per-class", "2", "--steps", "4",
                                        "--per-timestep", "--method", "prototype", "-q", "-o",
                                        classes, NULL });
  g_assert_cmpint (r.status, ==, 0);
  cli_run_clear (&r);
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_load (classes, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_direction_set_get_n (set), ==, N_CLASSES);
  g_assert_cmpint (ddim_direction_set_get_nth (set, 0)->n_timesteps, ==, 2);
  g_assert_cmpint (ddim_direction_set_get_nth (set, 0)->timesteps[0], ==, 750);
  cli_run (&r, NULL, (const char *[]){ "directions", "list", classes, NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "at 2 timesteps"));
  g_assert_nonnull (strstr (r.out, " prototype "));
  cli_run_clear (&r);
  g_assert_cmpstr (ddim_direction_set_get_nth (set, 7)->name, ==, "sneaker");
  g_assert_cmpstr (ddim_direction_set_get_nth (set, 7)->description, ==, "toward sneaker");
  g_assert_cmpstr (ddim_direction_set_get_nth (set, 9)->description, ==, "toward ankle boot");

  cli_run (&r, NULL, (const char *[]){ "directions", "pca", variant, "-k", "2", "-n", "4",
                                        "--steps", "2", "-q", "-o", pca, NULL });
  g_assert_cmpint (r.status, ==, 0);
  cli_run_clear (&r);
  cli_run (&r, NULL,
           (const char *[]){ "directions", "merge", classes, pca, "-o", all, "-q", NULL });
  g_assert_cmpint (r.status, ==, 0);
  cli_run_clear (&r);
  g_autoptr (DdimDirectionSet) merged = ddim_direction_set_load (all, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_direction_set_get_n (merged), ==, N_CLASSES + 2);

  cli_run (&r, NULL, (const char *[]){ "eval-edit", variant, "--classifier", classifier,
                                        "--directions", all, "--classes", "sneaker,bag",
                                        "--per-class", "3", "--batch", "2", "--steps", "2",
                                        "--strength", "0,5", "--samples-png", grid, "-q", NULL });
  if (r.status != 0)
    g_error ("eval-edit failed:\n%s", r.err);
  /* Two directions x two strengths, the means, the sweep's choice. */
  g_assert_nonnull (strstr (r.out, "\nsneaker "));
  g_assert_nonnull (strstr (r.out, "\nbag "));
  g_assert_nonnull (strstr (r.out, "Mean success over 2 directions at strength 5"));
  g_assert_nonnull (strstr (r.out, "Highest success per direction"));
  g_assert_null (strstr (r.out, "\npca-1 "));
  cli_run_clear (&r);
  g_autoptr (DdimImage) png = ddim_image_load (grid, 1, 0, 0, &error);
  g_assert_no_error (error);
  /* 2 x 2 rows of 3 source/edit pairs, 32-pixel cells, 2-pixel gaps. */
  g_assert_cmpint (png->width, ==, 6 * 32 + 5 * 2);
  g_assert_cmpint (png->height, ==, 4 * 32 + 3 * 2);

  for (const char *const *f = (const char *[]){ classes, pca, all, grid, NULL }; *f; f++)
    g_unlink (*f);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/class-directions/fit", test_fit_classes);
  g_test_add_func ("/class-directions/fit-errors", test_fit_classes_errors);
  g_test_add_func ("/class-directions/class-names", test_class_names);
  g_test_add_func ("/class-directions/dataset-picks", test_dataset_picks);
  g_test_add_func ("/class-directions/merge", test_merge);
  g_test_add_func ("/edit-score/shape-mask", test_shape_mask);
  g_test_add_func ("/cli/class-errors", test_cli_errors);
  g_test_add_func ("/cli/class-end-to-end", test_cli_end_to_end);
  return g_test_run ();
}
