/* The hooked reverse process (see reverse.h). The step arithmetic is
 * ddim_sample's, expression for expression, so that unhooked steps give
 * its bits. */
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "edit/reverse.h"
#include "model/unet-private.h"

gboolean
ddim_reverse_check (DdimUNet *unet, int height, int width, GError **error)
{
  if (!ddim_unet_check_size (unet, height, width, error))
    return FALSE;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  if (c->in_channels != c->out_channels)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "DDIM needs in_channels == out_channels (model has %d and %d)",
                   c->in_channels, c->out_channels);
      return FALSE;
    }
  return TRUE;
}

int
ddim_reverse_step_at (const int *ts, int steps, int t)
{
  for (int i = 0; i < steps; i++)
    if (ts[i] <= t)
      return i;
  return steps - 1;
}

typedef struct {
  const DdimReverseHooks *hooks;
  int step, t;
} ShiftClosure;

static void
shift_cb (float *h, gsize count, gpointer data)
{
  ShiftClosure *s = data;
  s->hooks->shift (s->step, s->t, h, count, s->hooks->data);
}

gboolean
ddim_reverse_run (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
                  const DdimRunOptions *o, const DdimReverseHooks *hooks, int progress_done,
                  int progress_total, GError **error)
{
  g_return_val_if_fail (unet && s && x && o && n > 0, FALSE);
  if (!ddim_reverse_check (unet, height, width, error))
    return FALSE;
  if (o->eta != 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "edits and interpolation are deterministic: eta must be 0, not %g", o->eta);
      return FALSE;
    }
  g_autofree int *ts = ddim_schedule_timesteps (s, o->steps, o->spacing, error);
  if (ts == NULL)
    return FALSE;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  gsize count = (gsize) n * c->out_channels * height * width;
  int hc, hh, hw;
  ddim_unet_hspace_shape (unet, height, width, &hc, &hh, &hw);
  gsize hcount = (gsize) n * hc * hh * hw;
  int ratio = ddim_schedule_step_ratio (s, o->steps);
  if (progress_total <= 0)
    progress_total = o->steps;

  g_autofree float *out = g_new (float, count);
  g_autofree float *out_shift = NULL;
  g_autofree float *x0 = g_new (float, count);
  g_autofree float *eps = g_new (float, count);
  g_autofree float *x0_plain = NULL;
  g_autofree float *hbuf = NULL;
  g_autofree float *tbuf = g_new (float, n);
  if (o->trajectory)
    memcpy (o->trajectory, x, sizeof (float) * count);

  int n_steps = hooks && hooks->max_steps > 0 ? MIN (hooks->max_steps, o->steps) : o->steps;
  for (int i = 0; i < n_steps; i++)
    {
      if (o->cancellable && g_cancellable_is_cancelled (o->cancellable))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED, "cancelled");
          return FALSE;
        }
      int t = ts[i], prev = t - ratio;
      if (hooks && hooks->before)
        hooks->before (i, t, x, count, hooks->data);
      gboolean shifted = hooks && hooks->shift && hooks->wants_shift
                         && hooks->wants_shift (i, t, hooks->data);
      gboolean observe = hooks && hooks->observe
                         && (hooks->wants_h == NULL || hooks->wants_h (i, t, hooks->data));
      for (int b = 0; b < n; b++)
        tbuf[b] = (float) t;
      if (!shifted && !observe)
        {
          if (!ddim_unet_forward (unet, x, n, height, width, tbuf, out, error))
            return FALSE;
          if (hooks && hooks->stats)
            hooks->stats->model_evals++;
        }
      else
        {
          if (shifted && out_shift == NULL)
            out_shift = g_new (float, count);
          if (observe && hbuf == NULL)
            hbuf = g_new (float, hcount);
          ShiftClosure cl = { hooks, i, t };
          ddim_unet_run_pair (unet, x, n, height, width, tbuf, shifted ? shift_cb : NULL, &cl,
                              observe ? hbuf : NULL, out, shifted ? out_shift : NULL);
          if (hooks->stats)
            {
              hooks->stats->model_evals++;
              hooks->stats->shifted_decoders += shifted;
            }
          if (observe)
            hooks->observe (i, t, hbuf, hcount, hooks->data);
        }

      float a_t = ddim_schedule_alpha (s, t), a_prev = ddim_schedule_alpha (s, prev);
      if (!shifted)
        ddim_model_output_to_x0_eps (s->prediction, a_t, x, out, count, x0, eps);
      else
        {
          /* P_t from the shifted output, D_t from the plain one. */
          if (x0_plain == NULL)
            x0_plain = g_new (float, count);
          ddim_model_output_to_x0_eps (s->prediction, a_t, x, out_shift, count, x0, NULL);
          ddim_model_output_to_x0_eps (s->prediction, a_t, x, out, count, x0_plain, eps);
        }
      if (o->clip_sample)
        {
          float r = (float) s->clip_sample_range;
          float sa = sqrtf (a_t), sb = sqrtf (1.f - a_t);
          float *x0e = shifted ? x0_plain : x0;   /* the x0 eps is re-derived from */
          for (gsize j = 0; j < count; j++)
            {
              if (shifted)
                x0[j] = CLAMP (x0[j], -r, r);
              x0e[j] = CLAMP (x0e[j], -r, r);
              /* diffusers re-derives eps from the clipped x0. */
              eps[j] = (x[j] - sa * x0e[j]) / sb;
            }
        }
      float sigma = 0.f;
      float ca = sqrtf (a_prev), cd = sqrtf (1.f - a_prev - sigma * sigma);
      for (gsize j = 0; j < count; j++)
        x[j] = ca * x0[j] + cd * eps[j];
      if (o->trajectory)
        memcpy (o->trajectory + (gsize) (i + 1) * count, x, sizeof (float) * count);
      if (o->progress)
        o->progress (progress_done + i + 1, progress_total, o->progress_data);
    }
  return TRUE;
}

void
ddim_progress_relay (int done, int total, gpointer data)
{
  (void) total;
  DdimProgressRelay *r = data;
  if (r->func)
    r->func (r->done + done, r->total, r->data);
}

void
ddim_run_options_relay (const DdimRunOptions *o, DdimProgressRelay *relay, int done, int total,
                        DdimRunOptions *out)
{
  *out = *o;
  *relay = (DdimProgressRelay) { o->progress, o->progress_data, done, total };
  out->progress = o->progress ? ddim_progress_relay : NULL;
  out->progress_data = relay;
  out->trajectory = NULL;
}
