/* Schedules, timestep spacing, prediction types, stochastic sampling,
 * progress and cancellation, and the activation arena. */
#include <math.h>
#include <string.h>

#include "ddim/ddim.h"
#include "ddim/json.h"
#include "model/unet-private.h"

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

static DdimSchedule *
parse (const char *json)
{
  g_autoptr (GError) error = NULL;
  DdimSchedule *s = ddim_schedule_parse (json, -1, &error);
  g_assert_no_error (error);
  return s;
}

static void
test_spacing (void)
{
  g_autoptr (DdimSchedule) s = ddim_schedule_new_default ();
  g_autoptr (GError) error = NULL;
  /* Values as diffusers' DDIMScheduler.set_timesteps gives them. */
  static const int leading[] = { 900, 800, 700, 600, 500, 400, 300, 200, 100, 0 };
  static const int trailing[] = { 999, 899, 799, 699, 599, 499, 399, 299, 199, 99 };
  static const int linspace[] = { 999, 888, 777, 666, 555, 444, 333, 222, 111, 0 };
  g_autofree int *a = ddim_schedule_timesteps (s, 10, DDIM_SPACING_LEADING, &error);
  g_autofree int *b = ddim_schedule_timesteps (s, 10, DDIM_SPACING_TRAILING, &error);
  g_autofree int *c = ddim_schedule_timesteps (s, 10, DDIM_SPACING_LINSPACE, &error);
  g_assert_cmpmem (a, sizeof leading, leading, sizeof leading);
  g_assert_cmpmem (b, sizeof trailing, trailing, sizeof trailing);
  g_assert_cmpmem (c, sizeof linspace, linspace, sizeof linspace);
  /* Trailing with a step count that does not divide T (np.round is half-even). */
  g_autofree int *d = ddim_schedule_timesteps (s, 3, DDIM_SPACING_TRAILING, &error);
  g_assert_cmpint (d[0], ==, 999);
  g_assert_cmpint (d[1], ==, 666);
  g_assert_cmpint (d[2], ==, 332);
  /* steps_offset shifts leading spacing. */
  g_autoptr (DdimSchedule) off = parse ("{\"steps_offset\": 1}");
  g_autofree int *e = ddim_schedule_timesteps (off, 4, DDIM_SPACING_LEADING, &error);
  g_assert_cmpint (e[0], ==, 751);
  g_assert_cmpint (e[3], ==, 1);
  g_assert_null (ddim_schedule_timesteps (s, 0, DDIM_SPACING_LEADING, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_null (ddim_schedule_timesteps (s, 1001, DDIM_SPACING_LEADING, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
}

static void
test_betas (void)
{
  g_autoptr (DdimSchedule) lin = ddim_schedule_new_default ();
  g_assert_cmpfloat_with_epsilon (lin->alphas_cumprod[0], 0.9999f, 1e-7);
  g_autoptr (DdimSchedule) sl = parse ("{\"beta_schedule\": \"scaled_linear\", "
                                       "\"beta_start\": 0.00085, \"beta_end\": 0.012}");
  /* beta_0 = 0.00085 exactly, beta_T-1 = 0.012. */
  g_assert_cmpfloat_with_epsilon (sl->alphas_cumprod[0], 1 - 0.00085, 1e-7);
  double prod = 1;
  for (int i = 0; i < 1000; i++)
    {
      double sb = sqrt (0.00085) + (sqrt (0.012) - sqrt (0.00085)) * i / 999.0;
      prod *= 1 - sb * sb;
    }
  g_assert_cmpfloat (fabs (sl->alphas_cumprod[999] - prod) / prod, <, 1e-4);
  g_autoptr (DdimSchedule) cosine = parse ("{\"beta_schedule\": \"squaredcos_cap_v2\"}");
  /* alpha_bar(t) = cos^2(((t/T) + s)/(1 + s) pi/2) / alpha_bar(0). */
  double f0 = pow (cos (0.008 / 1.008 * G_PI / 2), 2);
  double want = pow (cos ((0.5 + 0.008) / 1.008 * G_PI / 2), 2) / f0;
  g_assert_cmpfloat (fabs (cosine->alphas_cumprod[499] - want), <, 1e-5);
  for (int i = 1; i < 1000; i++)
    g_assert_cmpfloat (cosine->alphas_cumprod[i], <, cosine->alphas_cumprod[i - 1]);
  g_autoptr (DdimSchedule) noone = parse ("{\"set_alpha_to_one\": false}");
  g_assert_cmpfloat (ddim_schedule_alpha (noone, -1), ==, noone->alphas_cumprod[0]);
  g_assert_cmpfloat (ddim_schedule_alpha (lin, -1), ==, 1.0f);

  /* The JSON we write reads back the same. */
  g_autofree char *json = ddim_schedule_to_json (sl);
  g_autoptr (DdimSchedule) again = parse (json);
  g_assert_cmpmem (again->alphas_cumprod, 4000, sl->alphas_cumprod, 4000);
  g_assert_cmpint (again->prediction, ==, sl->prediction);
}

static void
test_predictions (void)
{
  /* x = sqrt(a) x0 + sqrt(1-a) eps; v = sqrt(a) eps - sqrt(1-a) x0. */
  float a = 0.37f, x0 = 0.4f, eps = -1.3f;
  float x = sqrtf (a) * x0 + sqrtf (1 - a) * eps;
  float v = sqrtf (a) * eps - sqrtf (1 - a) * x0;
  float got_x0, got_eps;
  ddim_model_output_to_x0_eps (DDIM_PREDICT_V, a, &x, &v, 1, &got_x0, &got_eps);
  g_assert_cmpfloat_with_epsilon (got_x0, x0, 1e-6);
  g_assert_cmpfloat_with_epsilon (got_eps, eps, 1e-6);
  ddim_model_output_to_x0_eps (DDIM_PREDICT_SAMPLE, a, &x, &x0, 1, &got_x0, &got_eps);
  g_assert_cmpfloat_with_epsilon (got_eps, eps, 1e-5);
  ddim_model_output_to_x0_eps (DDIM_PREDICT_EPSILON, a, &x, &eps, 1, &got_x0, &got_eps);
  g_assert_cmpfloat_with_epsilon (got_x0, x0, 1e-6);
}

typedef struct {
  int calls;
  int last_done, last_total;
  GCancellable *cancel_after_two;
} Progress;

static void
on_progress (int done, int total, gpointer data)
{
  Progress *p = data;
  p->calls++;
  p->last_done = done;
  p->last_total = total;
  if (p->cancel_after_two && done == 2)
    g_cancellable_cancel (p->cancel_after_two);
}

static void
test_eta_progress_cancel (void)
{
  g_autoptr (DdimModel) m = load_fixture ("tiny-cifar");
  if (m == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  gsize n = 3 * 16 * 16;
  float a[3 * 16 * 16], b[3 * 16 * 16], c[3 * 16 * 16], start[3 * 16 * 16];
  ddim_randn (11, start, n);
  DdimRunOptions o;
  ddim_run_options_init (&o, m->schedule);
  o.steps = 5;
  o.eta = 0.5;
  o.seed = 3;
  Progress p = { 0 };
  o.progress = on_progress;
  o.progress_data = &p;
  g_autoptr (GError) error = NULL;
  memcpy (a, start, sizeof a);
  memcpy (b, start, sizeof b);
  memcpy (c, start, sizeof c);
  g_assert_true (ddim_sample (m->unet, m->schedule, a, 1, 16, 16, &o, &error));
  g_assert_cmpint (p.calls, ==, 5);
  g_assert_cmpint (p.last_done, ==, 5);
  g_assert_cmpint (p.last_total, ==, 5);
  g_assert_true (ddim_sample (m->unet, m->schedule, b, 1, 16, 16, &o, &error));
  g_assert_cmpmem (a, sizeof a, b, sizeof b);   /* same seed, same result */
  o.seed = 4;
  g_assert_true (ddim_sample (m->unet, m->schedule, c, 1, 16, 16, &o, &error));
  g_assert_true (memcmp (a, c, sizeof a) != 0); /* another seed differs */

  o.eta = -1;
  g_assert_false (ddim_sample (m->unet, m->schedule, c, 1, 16, 16, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);

  o.eta = 0;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  o.cancellable = cancellable;
  p.cancel_after_two = cancellable;
  p.calls = 0;
  g_assert_false (ddim_invert (m->unet, m->schedule, c, 1, 16, 16, &o, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED);
  g_assert_cmpint (p.calls, ==, 2);
}

static void
test_eps_at_modes (void)
{
  g_autoptr (DdimModel) m = load_fixture ("tiny-variant");
  if (m == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  gsize n = 32 * 32;
  g_autofree float *x1 = g_new (float, n);
  g_autofree float *x2 = g_new (float, n);
  ddim_randn (5, x1, n);
  for (gsize i = 0; i < n; i++)
    x1[i] = tanhf (x1[i]);
  memcpy (x2, x1, n * sizeof (float));
  DdimRunOptions o;
  ddim_run_options_init (&o, m->schedule);
  g_assert_cmpint (o.eps_at, ==, DDIM_EPS_AT_CURRENT);
  o.steps = 4;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_invert (m->unet, m->schedule, x1, 1, 32, 32, &o, &error));
  o.eps_at = DDIM_EPS_AT_TARGET;
  g_assert_true (ddim_invert (m->unet, m->schedule, x2, 1, 32, 32, &o, &error));
  g_assert_no_error (error);
  g_assert_true (memcmp (x1, x2, n * sizeof (float)) != 0);
}

static void
test_arena_reuse (void)
{
  g_autoptr (DdimModel) m = load_fixture ("tiny-cifar");
  if (m == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  float x[2 * 3 * 16 * 16], out[2 * 3 * 16 * 16], t[2] = { 10, 500 };
  ddim_randn (1, x, G_N_ELEMENTS (x));
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_unet_forward (m->unet, x, 2, 16, 16, t, out, &error));
  /* The first call may overflow the arena (it learns its size) ... */
  g_assert_true (ddim_unet_forward (m->unet, x, 2, 16, 16, t, out, &error));
  float *base = m->unet->arena.base;
  gsize cap = m->unet->arena.capacity;
  /* ... later calls of the same or smaller shape allocate nothing. */
  for (int i = 0; i < 3; i++)
    {
      g_assert_true (ddim_unet_forward (m->unet, x, i == 2 ? 1 : 2, 16, 16, t, out, &error));
      g_assert_cmpuint (m->unet->arena.high, <=, m->unet->arena.capacity);
      g_assert_true (m->unet->arena.base == base);
      g_assert_cmpuint (m->unet->arena.capacity, ==, cap);
    }
}

/* Doubles json-glib 1.6 would write as invalid JSON ("1e-08.0") come out
 * valid, shortest and exact. */
static void
test_json_doubles (void)
{
  static const double values[] = { 1e-08, 1e-06, 1e+20, 0.1, 1.0, 2.5e-3, -3.0, 1e-300 };
  for (guint i = 0; i < G_N_ELEMENTS (values); i++)
    {
      g_autoptr (JsonNode) node = json_node_init_double (json_node_alloc (), values[i]);
      g_autofree char *text = ddim_json_to_string (node, 0);
      g_autoptr (JsonParser) parser = json_parser_new ();
      g_autoptr (GError) error = NULL;
      g_assert_true (json_parser_load_from_data (parser, text, -1, &error));
      g_assert_no_error (error);
      g_assert_cmpfloat (json_node_get_double (json_parser_get_root (parser)), ==, values[i]);
    }
  g_autoptr (JsonNode) small = json_node_init_double (json_node_alloc (), 1e-06);
  g_autofree char *t = ddim_json_to_string (small, 0);
  g_assert_cmpstr (t, ==, "1e-06");
  /* A schedule with such a beta reads back what it wrote. */
  g_autoptr (DdimSchedule) s = parse ("{\"beta_start\": 1e-08, \"beta_end\": 0.02}");
  g_autofree char *json = ddim_schedule_to_json (s);
  g_autoptr (DdimSchedule) again = parse (json);
  g_assert_cmpfloat (again->beta_start, ==, 1e-08);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/schedule/spacing", test_spacing);
  g_test_add_func ("/schedule/betas", test_betas);
  g_test_add_func ("/json/doubles", test_json_doubles);
  g_test_add_func ("/sampler/predictions", test_predictions);
  g_test_add_func ("/sampler/eta-progress-cancel", test_eta_progress_cancel);
  g_test_add_func ("/sampler/eps-at-modes", test_eps_at_modes);
  g_test_add_func ("/unet/arena-reuse", test_arena_reuse);
  return g_test_run ();
}
