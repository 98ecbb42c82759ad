/* DDIM sampling and inversion steps. Scalar coefficients are float32, as in
 * diffusers, so trajectories follow the reference closely. */
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "ddim/sampler.h"

void
ddim_run_options_init (DdimRunOptions *o, const DdimSchedule *schedule)
{
  memset (o, 0, sizeof *o);
  o->steps = 50;
  o->spacing = schedule ? schedule->spacing : DDIM_SPACING_LEADING;
  o->eps_at = DDIM_EPS_AT_CURRENT;
}

void
ddim_model_output_to_x0_eps (DdimPrediction prediction, float alpha, const float *x,
                             const float *out, gsize count, float *x0, float *eps)
{
  float sa = sqrtf (alpha), sb = sqrtf (1.f - alpha);
  for (gsize i = 0; i < count; i++)
    {
      float p0, pe;
      switch (prediction)
        {
        case DDIM_PREDICT_V:
          p0 = sa * x[i] - sb * out[i];
          pe = sa * out[i] + sb * x[i];
          break;
        case DDIM_PREDICT_SAMPLE:
          p0 = out[i];
          pe = (x[i] - sa * p0) / sb;
          break;
        case DDIM_PREDICT_EPSILON:
        default:
          p0 = (x[i] - sb * out[i]) / sa;
          pe = out[i];
          break;
        }
      if (x0)
        x0[i] = p0;
      if (eps)
        eps[i] = pe;
    }
}

/* xoshiro256** seeded by splitmix64; Box-Muller for normals. */
void
ddim_randn (guint64 seed, float *out, gsize count)
{
  guint64 s[4], z = seed;
  for (int i = 0; i < 4; i++)
    {
      guint64 v = (z += 0x9e3779b97f4a7c15ULL);
      v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ULL;
      v = (v ^ (v >> 27)) * 0x94d049bb133111ebULL;
      s[i] = v ^ (v >> 31);
    }
#define ROTL(x, k) (((x) << (k)) | ((x) >> (64 - (k))))
  for (gsize i = 0; i < count; i += 2)
    {
      double u[2];
      for (int j = 0; j < 2; j++)
        {
          guint64 r = ROTL (s[1] * 5, 7) * 9, t = s[1] << 17;
          s[2] ^= s[0];
          s[3] ^= s[1];
          s[1] ^= s[2];
          s[0] ^= s[3];
          s[2] ^= t;
          s[3] = ROTL (s[3], 45);
          u[j] = ((r >> 11) + 0.5) * (1.0 / 9007199254740992.0); /* (0, 1) */
        }
      double rad = sqrt (-2.0 * log (u[0]));
      out[i] = (float) (rad * cos (2 * G_PI * u[1]));
      if (i + 1 < count)
        out[i + 1] = (float) (rad * sin (2 * G_PI * u[1]));
    }
#undef ROTL
}

static gboolean
check_common (DdimUNet *unet, int height, int width, const DdimRunOptions *o, GError **error)
{
  if (!ddim_unet_check_size (unet, height, width, error))
    return FALSE;
  if (isnan (o->eta) || o->eta < 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "eta must be >= 0, not %g", o->eta);
      return FALSE;
    }
  return TRUE;
}

static gboolean
cancelled (const DdimRunOptions *o, GError **error)
{
  if (o->cancellable && g_cancellable_is_cancelled (o->cancellable))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED, "cancelled");
      return TRUE;
    }
  return FALSE;
}

/* Model evaluation at one timestep for the whole batch. */
static gboolean
eval_model (DdimUNet *unet, const float *x, int n, int h, int w, int t, float *out,
            float *tbuf, GError **error)
{
  for (int b = 0; b < n; b++)
    tbuf[b] = (float) t;
  return ddim_unet_forward (unet, x, n, h, w, tbuf, out, error);
}

gboolean
ddim_sample (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
             const DdimRunOptions *o, GError **error)
{
  g_return_val_if_fail (unet && s && x && o && n > 0, FALSE);
  if (!check_common (unet, height, width, o, error))
    return FALSE;
  g_autofree int *ts = ddim_schedule_timesteps (s, o->steps, o->spacing, error);
  if (ts == NULL)
    return FALSE;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  gsize count = (gsize) n * c->out_channels * height * width;
  if (c->in_channels != c->out_channels)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "DDIM needs in_channels == out_channels (model has %d and %d)",
                   c->in_channels, c->out_channels);
      return FALSE;
    }
  int ratio = ddim_schedule_step_ratio (s, o->steps);
  g_autofree float *out = g_new (float, count);
  g_autofree float *x0 = g_new (float, count);
  g_autofree float *eps = g_new (float, count);
  g_autofree float *noise = o->eta > 0 ? g_new (float, count) : NULL;
  g_autofree float *tbuf = g_new (float, n);
  if (o->trajectory)
    memcpy (o->trajectory, x, sizeof (float) * count);

  for (int i = 0; i < o->steps; i++)
    {
      if (cancelled (o, error))
        return FALSE;
      int t = ts[i], prev = t - ratio;
      if (!eval_model (unet, x, n, height, width, t, out, tbuf, error))
        return FALSE;
      float a_t = ddim_schedule_alpha (s, t), a_prev = ddim_schedule_alpha (s, prev);
      ddim_model_output_to_x0_eps (s->prediction, a_t, x, out, count, x0, eps);
      if (o->clip_sample)
        {
          float r = (float) s->clip_sample_range;
          float sa = sqrtf (a_t), sb = sqrtf (1.f - a_t);
          for (gsize j = 0; j < count; j++)
            {
              x0[j] = CLAMP (x0[j], -r, r);
              /* diffusers re-derives eps from the clipped x0. */
              eps[j] = (x[j] - sa * x0[j]) / sb;
            }
        }
      float sigma = 0.f;
      if (o->eta > 0)
        {
          float var = (1.f - a_prev) / (1.f - a_t) * (1.f - a_t / a_prev);
          sigma = (float) o->eta * sqrtf (var);
          /* A stream per step, distinct from the stream ddim_randn (seed)
           * gives (which callers use for x_T). */
          guint64 stream = (o->seed ^ 0xd1b54a32d192ed03ULL) * 0x9e3779b97f4a7c15ULL + (guint64) i;
          ddim_randn (stream, noise, count);
        }
      float ca = sqrtf (a_prev), cd = sqrtf (1.f - a_prev - sigma * sigma);
      for (gsize j = 0; j < count; j++)
        {
          x[j] = ca * x0[j] + cd * eps[j];
          if (sigma > 0)
            x[j] += sigma * noise[j];
        }
      if (o->trajectory)
        memcpy (o->trajectory + (gsize) (i + 1) * count, x, sizeof (float) * count);
      if (o->progress)
        o->progress (i + 1, o->steps, o->progress_data);
    }
  return TRUE;
}

gboolean
ddim_invert (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
             const DdimRunOptions *o, GError **error)
{
  g_return_val_if_fail (unet && s && x && o && n > 0, FALSE);
  if (!check_common (unet, height, width, o, error))
    return FALSE;
  g_autofree int *ts = ddim_schedule_timesteps (s, o->steps, o->spacing, error);
  if (ts == NULL)
    return FALSE;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  if (c->in_channels != c->out_channels)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "DDIM needs in_channels == out_channels (model has %d and %d)",
                   c->in_channels, c->out_channels);
      return FALSE;
    }
  gsize count = (gsize) n * c->out_channels * height * width;
  int ratio = ddim_schedule_step_ratio (s, o->steps);
  g_autofree float *out = g_new (float, count);
  g_autofree float *x0 = g_new (float, count);
  g_autofree float *eps = g_new (float, count);
  g_autofree float *tbuf = g_new (float, n);
  if (o->trajectory)
    memcpy (o->trajectory, x, sizeof (float) * count);

  /* Upwards through the sampling timesteps: t_next = ts[steps-1-i]; the
   * current level is t_next - ratio (alpha 1 below 0, as
   * DDIMInverseScheduler's initial_alpha_cumprod). */
  for (int i = 0; i < o->steps; i++)
    {
      if (cancelled (o, error))
        return FALSE;
      int t_next = ts[o->steps - 1 - i], t_cur = t_next - ratio;
      /* At the current level diffusers passes t_cur as is, even the
       * negative first one (-ratio): the sinusoidal embedding is defined
       * there, and the fixtures computed by diffusers confirm it. */
      int t_eval = o->eps_at == DDIM_EPS_AT_TARGET ? t_next : t_cur;
      if (!eval_model (unet, x, n, height, width, t_eval, out, tbuf, error))
        return FALSE;
      float a_cur = ddim_schedule_alpha (s, t_cur), a_next = ddim_schedule_alpha (s, t_next);
      ddim_model_output_to_x0_eps (s->prediction, a_cur, x, out, count, x0, eps);
      float ca = sqrtf (a_next), cd = sqrtf (1.f - a_next);
      for (gsize j = 0; j < count; j++)
        x[j] = ca * x0[j] + cd * eps[j];
      if (o->trajectory)
        memcpy (o->trajectory + (gsize) (i + 1) * count, x, sizeof (float) * count);
      if (o->progress)
        o->progress (i + 1, o->steps, o->progress_data);
    }
  return TRUE;
}
