/* libddim against diffusers' own outputs (../shared/fixtures/diffusers):
 * forward passes, alphas_cumprod, the 10-step DDIM inversion trajectory,
 * x_T and the reconstruction, for both fixture models. */
#include <math.h>
#include <string.h>

#include "ddim/ddim.h"

typedef struct {
  const char *name;
} Fixture;

static char *
fixture_path (const char *model, const char *file)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  if (root == NULL)
    return NULL;
  return g_build_filename (root, "diffusers", model, file, NULL);
}

/* Largest |a - b| relative to the largest |b|. */
static double
rel_max_diff (const float *a, const float *b, gsize n)
{
  double md = 0, mb = 0;
  for (gsize i = 0; i < n; i++)
    {
      md = MAX (md, fabs ((double) a[i] - b[i]));
      mb = MAX (mb, fabs ((double) b[i]));
    }
  return md / MAX (mb, 1e-30);
}

static gboolean
load (const char *model, DdimModel **m, DdimSafetensors **cases)
{
  g_autofree char *folder = fixture_path (model, "");
  g_autofree char *cases_path = fixture_path (model, "cases.safetensors");
  if (folder == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return FALSE;
    }
  g_autoptr (GError) error = NULL;
  *m = ddim_model_load (folder, &error);
  g_assert_no_error (error);
  *cases = ddim_safetensors_open (cases_path, &error);
  g_assert_no_error (error);
  return TRUE;
}

static float *
read_case (DdimSafetensors *cases, const char *name, const DdimTensorInfo **info)
{
  g_autoptr (GError) error = NULL;
  *info = ddim_safetensors_lookup (cases, name);
  g_assert_nonnull (*info);
  float *data = ddim_safetensors_read_f32 (cases, name, 0, NULL, &error);
  g_assert_no_error (error);
  return data;
}

static void
test_forward (gconstpointer data)
{
  const char *model = data;
  DdimModel *m;
  DdimSafetensors *cases;
  if (!load (model, &m, &cases))
    return;
  const DdimTensorInfo *xi, *ti, *oi;
  g_autofree float *x = read_case (cases, "forward.x", &xi);
  g_autofree float *t = read_case (cases, "forward.t", &ti);
  g_autofree float *ref = read_case (cases, "forward.out", &oi);
  int n = (int) xi->shape[0], h = (int) xi->shape[2], w = (int) xi->shape[3];
  g_autofree float *out = g_new (float, oi->n_elements);
  g_autoptr (GError) error = NULL;

  /* The whole batch at once, then each row alone (batch 1 must agree). */
  g_assert_true (ddim_unet_forward (m->unet, x, n, h, w, t, out, &error));
  g_assert_no_error (error);
  double d = rel_max_diff (out, ref, oi->n_elements);
  g_test_message ("%s forward batch: max rel diff %.3g", model, d);
  g_assert_cmpfloat (d, <, 1e-4);
  gsize per = oi->n_elements / n;
  for (int b = 0; b < n; b++)
    {
      g_assert_true (ddim_unet_forward (m->unet, x + b * (gsize) xi->n_elements / n, 1, h, w,
                                        t + b, out, &error));
      double db = rel_max_diff (out, ref + b * per, per);
      g_test_message ("%s forward t=%g: max rel diff %.3g", model, t[b], db);
      g_assert_cmpfloat (db, <, 1e-4);
    }
  ddim_safetensors_free (cases);
  ddim_model_free (m);
}

static void
test_alphas (gconstpointer data)
{
  const char *model = data;
  DdimModel *m;
  DdimSafetensors *cases;
  if (!load (model, &m, &cases))
    return;
  const DdimTensorInfo *ai;
  g_autofree float *ref = read_case (cases, "alphas_cumprod", &ai);
  g_assert_cmpint (ai->n_elements, ==, m->schedule->num_train_timesteps);
  double d = rel_max_diff (m->schedule->alphas_cumprod, ref, ai->n_elements);
  g_test_message ("%s alphas_cumprod: max rel diff %.3g", model, d);
  g_assert_cmpfloat (d, <, 1e-6);
  ddim_safetensors_free (cases);
  ddim_model_free (m);
}

static void
test_ddim (gconstpointer data)
{
  const char *model = data;
  DdimModel *m;
  DdimSafetensors *cases;
  if (!load (model, &m, &cases))
    return;
  const DdimTensorInfo *x0i, *tri, *xti, *rci, *tsi, *itsi;
  g_autofree float *x0 = read_case (cases, "ddim.x0", &x0i);
  g_autofree float *traj_ref = read_case (cases, "ddim.inverse_trajectory", &tri);
  g_autofree float *xT_ref = read_case (cases, "ddim.xT", &xti);
  g_autofree float *rec_ref = read_case (cases, "ddim.reconstruction", &rci);
  g_autofree float *ts_ref = read_case (cases, "ddim.timesteps", &tsi);
  g_autofree float *its_ref = read_case (cases, "ddim.inverse_timesteps", &itsi);
  int steps = (int) tsi->n_elements;
  int c = (int) x0i->shape[1], h = (int) x0i->shape[2], w = (int) x0i->shape[3];
  gsize count = x0i->n_elements;
  g_autoptr (GError) error = NULL;

  g_autofree int *ts = ddim_schedule_timesteps (m->schedule, steps, DDIM_SPACING_LEADING, &error);
  g_assert_no_error (error);
  for (int i = 0; i < steps; i++)
    {
      g_assert_cmpint (ts[i], ==, (int) ts_ref[i]);
      /* diffusers lists the inverse steps by their starting level. */
      g_assert_cmpint (ts[steps - 1 - i] - ddim_schedule_step_ratio (m->schedule, steps), ==,
                       (int) its_ref[i]);
    }

  DdimRunOptions opt;
  ddim_run_options_init (&opt, m->schedule);
  opt.steps = steps;
  opt.spacing = DDIM_SPACING_LEADING;
  opt.eps_at = DDIM_EPS_AT_CURRENT;
  g_autofree float *traj = g_new (float, (gsize) (steps + 1) * count);
  opt.trajectory = traj;
  g_autofree float *x = g_memdup2 (x0, sizeof (float) * count);
  g_assert_true (ddim_invert (m->unet, m->schedule, x, 1, h, w, &opt, &error));
  g_assert_no_error (error);
  g_assert_cmpint (tri->shape[0], ==, steps + 1);
  for (int i = 0; i <= steps; i++)
    {
      double d = rel_max_diff (traj + i * count, traj_ref + i * count, count);
      g_test_message ("%s inverse trajectory[%d]: max rel diff %.3g", model, i, d);
      g_assert_cmpfloat (d, <, 1e-3);
    }
  double dx = rel_max_diff (x, xT_ref, count);
  g_test_message ("%s x_T: max rel diff %.3g", model, dx);
  g_assert_cmpfloat (dx, <, 1e-3);

  /* Reconstruction from the reference x_T, so the two checks are independent. */
  memcpy (x, xT_ref, sizeof (float) * count);
  opt.trajectory = NULL;
  g_assert_true (ddim_sample (m->unet, m->schedule, x, 1, h, w, &opt, &error));
  g_assert_no_error (error);
  double dr = rel_max_diff (x, rec_ref, count);
  g_test_message ("%s reconstruction: max rel diff %.3g", model, dr);
  g_assert_cmpfloat (dr, <, 1e-3);
  (void) c;
  ddim_safetensors_free (cases);
  ddim_model_free (m);
}

static void
test_vjp (gconstpointer data)
{
  const char *model = data;
  DdimModel *m;
  DdimSafetensors *cases;
  if (!load (model, &m, &cases))
    return;
  const DdimTensorInfo *xi, *ti, *wi, *gi;
  g_autofree float *x = read_case (cases, "vjp.x", &xi);
  g_autofree float *t = read_case (cases, "vjp.t", &ti);
  g_autofree float *w = read_case (cases, "vjp.w", &wi);
  g_autofree float *gx_ref = read_case (cases, "vjp.grad_x", &gi);
  int n = (int) xi->shape[0], h = (int) xi->shape[2], wd = (int) xi->shape[3];
  gsize np = ddim_unet_get_n_params (m->unet);
  g_autofree float *gx = g_new (float, gi->n_elements);
  g_autofree float *gp = g_new0 (float, np);
  g_autofree float *out = g_new (float, wi->n_elements);
  g_autofree float *out_ref = g_new (float, wi->n_elements);
  g_autoptr (GError) error = NULL;
  DdimUNetVjp io = { .out = out, .grad_x = gx, .grad_params = gp };
  g_assert_true (ddim_unet_vjp (m->unet, x, n, h, wd, t, w, &io, &error));
  g_assert_no_error (error);
  /* The taped forward gives the plain forward's output. */
  g_assert_true (ddim_unet_forward (m->unet, x, n, h, wd, t, out_ref, &error));
  g_assert_cmpmem (out, wi->n_elements * 4, out_ref, wi->n_elements * 4);
  double d = rel_max_diff (gx, gx_ref, gi->n_elements);
  g_test_message ("%s vjp grad_x: max rel diff %.3g", model, d);
  g_assert_cmpfloat (d, <, 1e-4);
  /* The fixtures' vjp.grad_param.* tensors are all zeros (even
   * conv_out.bias, whose gradient is exactly sum(w) per channel), so the
   * parameter gradients are checked against that identity and against
   * central finite differences of the whole model along random directions
   * in each of the fixture's named tensors. */
  int oc = (int) wi->shape[1];
  gssize ob = ddim_unet_get_param_offset (m->unet, "conv_out.bias");
  for (int ch = 0; ch < oc; ch++)
    {
      double sum = 0;
      for (int b = 0; b < n; b++)
        for (int i = 0; i < h * wd; i++)
          sum += w[((gsize) b * oc + ch) * h * wd + i];
      g_assert_cmpfloat (fabs (gp[ob + ch] - sum), <, 1e-4 * MAX (1.0, fabs (sum)));
    }
  int checked = 0;
  float *params = ddim_unet_get_params (m->unet);
  for (guint i = 0; i < ddim_safetensors_get_n_tensors (cases); i++)
    {
      const DdimTensorInfo *info = ddim_safetensors_get_info_nth (cases, i);
      if (!g_str_has_prefix (info->name, "vjp.grad_param."))
        continue;
      const char *pname = info->name + strlen ("vjp.grad_param.");
      gssize off = ddim_unet_get_param_offset (m->unet, pname);
      g_assert_cmpint (off, >=, 0);
      gsize cnt = info->n_elements;
      g_autofree float *dir = g_new (float, cnt);
      g_autofree float *saved = g_memdup2 (params + off, cnt * sizeof (float));
      ddim_randn (1000 + i, dir, cnt);
      double analytic = 0;
      for (gsize k = 0; k < cnt; k++)
        analytic += (double) gp[off + k] * dir[k];
      /* Central differences at steps h and h/2, Richardson-extrapolated:
       * O(h^4) truncation with a step large enough for float32 round-off. */
      double central[2];
      for (int r = 0; r < 2; r++)
        {
          float step = r ? 1e-2f : 2e-2f;
          double loss[2];
          for (int sgn = 0; sgn < 2; sgn++)
            {
              for (gsize k = 0; k < cnt; k++)
                params[off + k] = saved[k] + (sgn ? -step : step) * dir[k];
              g_assert_true (ddim_unet_forward (m->unet, x, n, h, wd, t, out, &error));
              loss[sgn] = 0;
              for (gsize k = 0; k < (gsize) wi->n_elements; k++)
                loss[sgn] += (double) w[k] * out[k];
            }
          central[r] = (loss[0] - loss[1]) / (2.0 * step);
        }
      memcpy (params + off, saved, cnt * sizeof (float));
      double fd = (4 * central[1] - central[0]) / 3;
      double rel = fabs (fd - analytic) / MAX (fabs (analytic), 1e-6);
      g_test_message ("%s vjp grad %s: directional %.6g, finite difference %.6g (rel %.2g)",
                      model, pname, analytic, fd, rel);
      g_assert_cmpfloat (rel, <, 5e-3);
      checked++;
    }
  g_assert_cmpint (checked, >=, 5);
  ddim_safetensors_free (cases);
  ddim_model_free (m);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  static const char *models[] = { "tiny-cifar", "tiny-variant" };
  for (guint i = 0; i < G_N_ELEMENTS (models); i++)
    {
      g_autofree char *p1 = g_strdup_printf ("/fixtures/%s/forward", models[i]);
      g_autofree char *p2 = g_strdup_printf ("/fixtures/%s/alphas-cumprod", models[i]);
      g_autofree char *p3 = g_strdup_printf ("/fixtures/%s/ddim-inversion-reconstruction", models[i]);
      g_test_add_data_func (p1, models[i], test_forward);
      g_test_add_data_func (p2, models[i], test_alphas);
      g_test_add_data_func (p3, models[i], test_ddim);
      g_autofree char *p4 = g_strdup_printf ("/fixtures/%s/vjp", models[i]);
      g_test_add_data_func (p4, models[i], test_vjp);
    }
  return g_test_run ();
}
