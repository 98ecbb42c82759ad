/* Spherical latent interpolation, with optional h interpolation (see
 * ddim/interpolate.h). */
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "ddim/interpolate.h"
#include "edit/reverse.h"

void
ddim_interpolate_options_init (DdimInterpolateOptions *o, const DdimSchedule *s)
{
  memset (o, 0, sizeof *o);
  ddim_run_options_init (&o->run, s);
  o->t_edit = -1;
}

void
ddim_slerp (const float *a, const float *b, gsize count, double alpha, float *out)
{
  g_return_if_fail (a && b && out);
  if (alpha == 0)
    {
      memmove (out, a, count * sizeof (float));
      return;
    }
  if (alpha == 1)
    {
      memmove (out, b, count * sizeof (float));
      return;
    }
  double ab = 0, aa = 0, bb = 0;
  for (gsize i = 0; i < count; i++)
    {
      ab += (double) a[i] * b[i];
      aa += (double) a[i] * a[i];
      bb += (double) b[i] * b[i];
    }
  double cosv = aa > 0 && bb > 0 ? ab / sqrt (aa * bb) : 1.0;
  double theta = acos (CLAMP (cosv, -1.0, 1.0));
  double st = sin (theta);
  double ca, cb;
  if (st < 1e-6)
    {
      ca = 1 - alpha;
      cb = alpha;
    }
  else
    {
      ca = sin ((1 - alpha) * theta) / st;
      cb = sin (alpha * theta) / st;
    }
  for (gsize i = 0; i < count; i++)
    out[i] = (float) (ca * a[i] + cb * b[i]);
}

typedef struct {
  float  *ha, *hb;     /* [steps, hs]: the ends' h at the interpolated steps */
  double  alpha;
  int     t_edit;
  gsize   hs;
  float  *record;      /* while decoding an end: where its h goes */
} HInterp;

static gboolean
in_interval (int step, int t, gpointer data)
{
  (void) step;
  return t >= ((HInterp *) data)->t_edit;
}

static void
record_h (int step, int t, const float *h, gsize count, gpointer data)
{
  (void) t;
  HInterp *hi = data;
  memcpy (hi->record + (gsize) step * hi->hs, h, count * sizeof (float));
}

static void
lerp_h (int step, int t, float *h, gsize count, gpointer data)
{
  (void) t;
  const HInterp *hi = data;
  const float *a = hi->ha + (gsize) step * hi->hs, *b = hi->hb + (gsize) step * hi->hs;
  float al = (float) hi->alpha;
  for (gsize i = 0; i < count; i++)
    h[i] = (1.f - al) * a[i] + al * b[i];
}

gboolean
ddim_interpolate (DdimUNet *unet, const DdimSchedule *s, const float *a, const float *b,
                  int height, int width, int n_frames, const DdimInterpolateOptions *o,
                  float *latents, float *frames, GError **error)
{
  g_return_val_if_fail (unet && s && a && b && o && frames, FALSE);
  if (n_frames < 2)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "interpolation needs at least 2 frames, not %d", n_frames);
      return FALSE;
    }
  if (!ddim_reverse_check (unet, height, width, error))
    return FALSE;
  int T = s->num_train_timesteps;
  int t_edit = o->t_edit < 0 ? T / 2 : o->t_edit;
  if (o->hspace && t_edit >= T)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the edit timestep must be between 0 and %d, not %d", T - 1, t_edit);
      return FALSE;
    }
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  gsize count = (gsize) c->in_channels * height * width;
  int hc, hh, hw;
  ddim_unet_hspace_shape (unet, height, width, &hc, &hh, &hw);
  gsize hs = (gsize) hc * hh * hw;
  int steps = o->run.steps;
  int total = n_frames * steps;
  DdimRunOptions ro = o->run;
  ro.trajectory = NULL;

  g_autofree float *ha = NULL, *hb = NULL;
  HInterp hi = { NULL, NULL, 0, t_edit, hs, NULL };
  if (o->hspace)
    {
      ha = g_new0 (float, (gsize) steps * hs);
      hb = g_new0 (float, (gsize) steps * hs);
      hi.ha = ha;
      hi.hb = hb;
    }
  /* The ends first: with h interpolation, the inner frames need their h. */
  int order[2] = { 0, n_frames - 1 };
  for (int e = 0; e < 2; e++)
    {
      int i = order[e];
      float *x = frames + (gsize) i * count;
      memcpy (x, i == 0 ? a : b, count * sizeof (float));
      if (latents)
        memcpy (latents + (gsize) i * count, x, count * sizeof (float));
      hi.record = i == 0 ? ha : hb;
      DdimReverseHooks rec = { .wants_h = in_interval, .observe = record_h, .data = &hi };
      if (!ddim_reverse_run (unet, s, x, 1, height, width, &ro, o->hspace ? &rec : NULL,
                             e * steps, total, error))
        return FALSE;
    }
  for (int i = 1; i < n_frames - 1; i++)
    {
      float *x = frames + (gsize) i * count;
      hi.alpha = (double) i / (n_frames - 1);
      ddim_slerp (a, b, count, hi.alpha, x);
      if (latents)
        memcpy (latents + (gsize) i * count, x, count * sizeof (float));
      DdimReverseHooks lerp = { .wants_shift = in_interval, .shift = lerp_h, .data = &hi };
      if (!ddim_reverse_run (unet, s, x, 1, height, width, &ro, o->hspace ? &lerp : NULL,
                             (i + 1) * steps, total, error))
        return FALSE;
    }
  return TRUE;
}
