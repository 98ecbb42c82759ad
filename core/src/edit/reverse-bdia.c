/* The hooked reverse process in BDIA's bidirectional decoder (see
 * edit/reverse.h and ddim/edit.h, ddim_edit_bdia). With no hook acting,
 * every expression is ddim_decode_bdia's (diffusion/exact.c), in the same
 * order and precision, so that a strength-0 edit retraces the inversion. */
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "edit/reverse.h"
#include "model/unet-private.h"

typedef struct {
  const DdimReverseHooks *hooks;
  int step, t;
} ShiftClosure;

static void
shift_cb (float *h, gsize count, gpointer data)
{
  ShiftClosure *c = data;
  c->hooks->shift (c->step, c->t, h, count, c->hooks->data);
}

/* The DDIM update from level @a_from to @a_to: z' = A z + B eps. */
static void
ddim_coef (double a_from, double a_to, double *A, double *B)
{
  *A = sqrt (a_to / a_from);
  *B = sqrt (1 - a_to) - *A * sqrt (1 - a_from);
}

typedef struct {
  double Cz, Ce;        /* D(z -> lower) - gamma D(z -> upper) = Cz z + Ce eps */
  double sa_lo, sa_t;   /* sqrt(alpha) of the lower level and of z's own */
} BdiaCoef;

static BdiaCoef
bdia_coef (const DdimSchedule *s, const int *ts, int i, int ratio, double gamma)
{
  int t = ts[i];
  double a = ddim_schedule_alpha (s, t);
  double a_lo = ddim_schedule_alpha (s, t - ratio), a_up = ddim_schedule_alpha (s, ts[i - 1]);
  double Alo, Blo, Aup, Bup;
  ddim_coef (a, a_lo, &Alo, &Blo);
  ddim_coef (a, a_up, &Aup, &Bup);
  return (BdiaCoef) { Alo - gamma * Aup, Blo - gamma * Bup, sqrt (a_lo), sqrt (a) };
}

gboolean
ddim_reverse_run_bdia (DdimUNet *unet, const DdimSchedule *s, float *x, const float *z_pair,
                       int n, int height, int width, double gamma, const DdimRunOptions *o,
                       const DdimReverseHooks *hooks, int progress_done, int progress_total,
                       GError **error)
{
  g_return_val_if_fail (unet && s && x && z_pair && o && n > 0, FALSE);
  g_return_val_if_fail (hooks == NULL || (hooks->observe == NULL && hooks->max_steps == 0),
                        FALSE);
  if (!ddim_reverse_check (unet, height, width, error))
    return FALSE;
  if (o->eta != 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "edits are deterministic: eta must be 0, not %g", o->eta);
      return FALSE;
    }
  if (!(gamma > 0 && gamma <= 1))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the BDIA gamma must be in (0, 1], not %g", gamma);
      return FALSE;
    }
  g_autofree int *ts = ddim_schedule_timesteps (s, o->steps, o->spacing, error);
  if (ts == NULL)
    return FALSE;
  int ratio = ddim_schedule_step_ratio (s, o->steps);
  if (progress_total <= 0)
    progress_total = o->steps - 1;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  gsize count = (gsize) n * c->out_channels * height * width;

  g_autofree double *up = g_new (double, count);   /* z_{i-1} (upper level) */
  g_autofree double *mid = g_new (double, count);  /* z_i */
  g_autofree float *in = g_new (float, count);
  g_autofree float *out = g_new (float, count);
  g_autofree float *epsf = g_new (float, count);
  g_autofree float *tbuf = g_new (float, n);
  g_autofree float *out_shift = NULL, *x0_shift = NULL, *x0_plain = NULL, *moved = NULL;
  for (gsize j = 0; j < count; j++)
    {
      up[j] = x[j];
      mid[j] = z_pair[j];
    }

  /* z_{i+1} = gamma z_{i-1} + Cz z_i + Ce eps(z_i, t_i) [+ Kx dx0], i = 1 .. N-1. */
  for (int i = 1; i < o->steps; i++)
    {
      if (o->cancellable && g_cancellable_is_cancelled (o->cancellable))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED, "cancelled");
          return FALSE;
        }
      int t = ts[i];
      BdiaCoef k = bdia_coef (s, ts, i, ratio, gamma);
      if (hooks && hooks->before)
        {
          if (moved == NULL)
            moved = g_new (float, count);
          memset (moved, 0, sizeof (float) * count);
          hooks->before (i, t, moved, count, hooks->data);
          for (gsize j = 0; j < count; j++)
            {
              up[j] += moved[j];
              mid[j] += moved[j];
            }
        }
      gboolean shifted = hooks && hooks->shift && hooks->wants_shift
                         && hooks->wants_shift (i, t, hooks->data);
      for (gsize j = 0; j < count; j++)
        in[j] = (float) mid[j];
      for (int b = 0; b < n; b++)
        tbuf[b] = (float) t;
      if (!shifted)
        {
          if (!ddim_unet_forward (unet, in, n, height, width, tbuf, out, error))
            return FALSE;
        }
      else
        {
          if (out_shift == NULL)
            {
              out_shift = g_new (float, count);
              x0_shift = g_new (float, count);
              x0_plain = g_new (float, count);
            }
          ShiftClosure cl = { hooks, i, t };
          ddim_unet_run_pair (unet, in, n, height, width, tbuf, shift_cb, &cl, NULL, out,
                              out_shift);
        }
      if (hooks && hooks->stats)
        {
          hooks->stats->model_evals++;
          hooks->stats->shifted_decoders += shifted;
        }
      float a_t = ddim_schedule_alpha (s, t);
      ddim_model_output_to_x0_eps (s->prediction, a_t, in, out, count, shifted ? x0_plain : NULL,
                                   epsf);
      if (!shifted)
        for (gsize j = 0; j < count; j++)
          up[j] = gamma * up[j] + k.Cz * mid[j] + k.Ce * (double) epsf[j];
      else
        {
          /* The shift dx0 of the predicted x0 moves the whole trajectory:
           * both states of the pair, each by sqrt(alpha) of its level
           * (noise held), so that the pair stays consistent and the next
           * steps' backward term does not take the edit for an error to
           * undo (shifting the new state alone makes the two interleaved
           * chains disagree, a ghost of the source over the edit). With
           * gamma 0 this is Asyrp's DDIM step. */
          ddim_model_output_to_x0_eps (s->prediction, a_t, in, out_shift, count, x0_shift, NULL);
          for (gsize j = 0; j < count; j++)
            {
              double dx0 = (double) x0_shift[j] - x0_plain[j];
              up[j] = gamma * up[j] + k.Cz * mid[j] + k.Ce * (double) epsf[j] + k.sa_lo * dx0;
              mid[j] += k.sa_t * dx0;
            }
        }
      double *tmp = up;
      up = mid;
      mid = tmp;
      if (o->progress)
        o->progress (progress_done + i, progress_total, o->progress_data);
    }
  for (gsize j = 0; j < count; j++)
    x[j] = (float) mid[j];
  return TRUE;
}
