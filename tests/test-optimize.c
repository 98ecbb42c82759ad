/* Optimisation-based inversion through the DDIM chain. */
#include <math.h>
#include <string.h>

#include "ddim/ddim.h"

static DdimModel *
load_fixture (const char *name, float **x0, int *c, int *h, int *w)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  if (root == NULL)
    return NULL;
  g_autofree char *dir = g_build_filename (root, "diffusers", name, NULL);
  g_autofree char *cases_path = g_build_filename (dir, "cases.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  DdimModel *m = ddim_model_load (dir, &error);
  g_assert_no_error (error);
  g_autoptr (DdimSafetensors) cases = ddim_safetensors_open (cases_path, &error);
  g_assert_no_error (error);
  const DdimTensorInfo *info = ddim_safetensors_lookup (cases, "ddim.x0");
  *c = (int) info->shape[1];
  *h = (int) info->shape[2];
  *w = (int) info->shape[3];
  *x0 = ddim_safetensors_read_f32 (cases, "ddim.x0", 0, NULL, &error);
  g_assert_no_error (error);
  return m;
}

static double
mse (const float *a, const float *b, gsize n)
{
  double s = 0;
  for (gsize i = 0; i < n; i++)
    s += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
  return s / n;
}

typedef struct {
  int calls;
  double last_psnr;
} Seen;

static void
on_progress (int it, int total, double m, double psnr, gpointer data)
{
  Seen *s = data;
  (void) it;
  (void) total;
  (void) m;
  s->calls++;
  s->last_psnr = psnr;
}

static void
test_beats_ddim (gconstpointer data)
{
  float *x0;
  int c, h, w;
  g_autoptr (DdimModel) m = load_fixture (data, &x0, &c, &h, &w);
  if (m == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  gsize n = (gsize) c * h * w;
  g_autoptr (GError) error = NULL;
  DdimRunOptions ro;
  ddim_run_options_init (&ro, m->schedule);
  ro.steps = 4;

  /* Plain DDIM inversion and its reconstruction. */
  g_autofree float *zd = g_memdup2 (x0, n * sizeof (float));
  g_assert_true (ddim_invert (m->unet, m->schedule, zd, 1, h, w, &ro, &error));
  g_autofree float *rd = g_memdup2 (zd, n * sizeof (float));
  g_assert_true (ddim_sample (m->unet, m->schedule, rd, 1, h, w, &ro, &error));
  double ddim_mse = mse (rd, x0, n);

  DdimOptimizeOptions oo;
  ddim_optimize_options_init (&oo);
  oo.iterations = 25;
  oo.learning_rate = 0.02;
  Seen seen = { 0 };
  oo.progress = on_progress;
  oo.progress_data = &seen;
  g_autofree float *z = g_new (float, n);
  DdimOptimizeStats st;
  g_assert_true (ddim_invert_optimize (m->unet, m->schedule, x0, z, h, w, &ro, &oo, &st, &error));
  g_assert_no_error (error);
  g_assert_cmpint (seen.calls, ==, 25);
  /* The returned latent decodes with plain DDIM to the reported error. */
  g_autofree float *rz = g_memdup2 (z, n * sizeof (float));
  g_assert_true (ddim_sample (m->unet, m->schedule, rz, 1, h, w, &ro, &error));
  double opt_mse = mse (rz, x0, n);
  g_test_message ("%s, 4 steps: DDIM inversion MSE %.4g (%.2f dB), hybrid optimisation %.4g "
                  "(%.2f dB), %d evals + %d VJPs", (const char *) data, ddim_mse,
                  10 * log10 (4 / ddim_mse), opt_mse, st.final_psnr, st.model_evals, st.model_vjps);
  g_assert_cmpfloat (fabs (opt_mse - st.final_mse), <, 1e-6 + 1e-4 * opt_mse);
  g_assert_cmpfloat (fabs (st.initial_mse - ddim_mse), <, 1e-6 + 1e-4 * ddim_mse);
  g_assert_cmpfloat (opt_mse, <, 0.8 * ddim_mse);
  g_assert_cmpint (st.model_vjps, ==, 25 * 4);
  g_free (x0);
}

/* The chain gradient against finite differences of sum(w * G_K(z)) along
 * a random direction (Richardson-extrapolated central differences). */
static void
test_chain_gradient (void)
{
  float *x0;
  int c, h, w;
  g_autoptr (DdimModel) m = load_fixture ("tiny-cifar", &x0, &c, &h, &w);
  if (m == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  gsize n = (gsize) c * h * w;
  g_autoptr (GError) error = NULL;
  DdimRunOptions ro;
  ddim_run_options_init (&ro, m->schedule);
  ro.steps = 3;
  g_autofree float *z = g_new (float, n);
  g_autofree float *cot = g_new (float, n);
  g_autofree float *dir = g_new (float, n);
  g_autofree float *grad = g_new (float, n);
  g_autofree float *zp = g_new (float, n);
  g_autofree float *xr = g_new (float, n);
  ddim_randn (9, z, n);
  ddim_randn (10, cot, n);
  ddim_randn (11, dir, n);
  g_assert_true (ddim_decode_vjp (m->unet, m->schedule, z, h, w, &ro, cot, xr, grad, &error));
  g_assert_no_error (error);
  double analytic = 0;
  for (gsize i = 0; i < n; i++)
    analytic += (double) grad[i] * dir[i];
  double central[2];
  for (int r = 0; r < 2; r++)
    {
      float step = r ? 5e-3f : 1e-2f;
      double l[2];
      for (int sg = 0; sg < 2; sg++)
        {
          for (gsize i = 0; i < n; i++)
            zp[i] = z[i] + (sg ? -step : step) * dir[i];
          g_assert_true (ddim_sample (m->unet, m->schedule, zp, 1, h, w, &ro, &error));
          l[sg] = 0;
          for (gsize i = 0; i < n; i++)
            l[sg] += (double) cot[i] * zp[i];
        }
      central[r] = (l[0] - l[1]) / (2.0 * step);
    }
  double fd = (4 * central[1] - central[0]) / 3;
  double rel = fabs (fd - analytic) / fabs (analytic);
  g_test_message ("decode VJP along a direction: %.6g, finite differences %.6g (rel %.2g)",
                  analytic, fd, rel);
  g_assert_cmpfloat (rel, <, 5e-3);
  /* G_K(z) as returned equals ddim_sample's decoding. */
  memcpy (zp, z, n * sizeof (float));
  g_assert_true (ddim_sample (m->unet, m->schedule, zp, 1, h, w, &ro, &error));
  g_assert_cmpfloat (mse (zp, xr, n), <, 1e-12);
  g_free (x0);
}

static void
test_inits_and_errors (void)
{
  float *x0;
  int c, h, w;
  g_autoptr (DdimModel) m = load_fixture ("tiny-cifar", &x0, &c, &h, &w);
  if (m == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  gsize n = (gsize) c * h * w;
  g_autoptr (GError) error = NULL;
  DdimRunOptions ro;
  ddim_run_options_init (&ro, m->schedule);
  ro.steps = 2;
  DdimOptimizeOptions oo;
  ddim_optimize_options_init (&oo);
  oo.iterations = 10;
  oo.learning_rate = 0.05;
  g_autofree float *z = g_new (float, n);
  DdimOptimizeInit inits[] = { DDIM_OPTIMIZE_INIT_ZERO, DDIM_OPTIMIZE_INIT_NOISE };
  for (guint i = 0; i < G_N_ELEMENTS (inits); i++)
    {
      DdimOptimizeStats st;
      oo.init = inits[i];
      g_assert_true (ddim_invert_optimize (m->unet, m->schedule, x0, z, h, w, &ro, &oo, &st, &error));
      g_assert_cmpfloat (st.final_mse, <, st.initial_mse);
    }
  oo.learning_rate = NAN;
  g_assert_false (ddim_invert_optimize (m->unet, m->schedule, x0, z, h, w, &ro, &oo, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_INVALID);
  g_clear_error (&error);
  oo.learning_rate = 0.01;
  g_autoptr (GCancellable) cancel = g_cancellable_new ();
  g_cancellable_cancel (cancel);
  oo.cancellable = cancel;
  g_assert_false (ddim_invert_optimize (m->unet, m->schedule, x0, z, h, w, &ro, &oo, NULL, &error));
  g_assert_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED);
  g_free (x0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_data_func ("/optimize/beats-ddim/tiny-cifar", "tiny-cifar", test_beats_ddim);
  g_test_add_data_func ("/optimize/beats-ddim/tiny-variant", "tiny-variant", test_beats_ddim);
  g_test_add_func ("/optimize/chain-gradient", test_chain_gradient);
  g_test_add_func ("/optimize/inits-and-errors", test_inits_and_errors);
  return g_test_run ();
}
