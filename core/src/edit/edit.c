/* Asyrp h-space and Park x-space editing over the hooked reverse process
 * (see ddim/edit.h and edit/reverse.h). */
#include <math.h>
#include <string.h>

#include "ddim/edit.h"
#include "ddim/error.h"
#include "edit/reverse.h"

int
ddim_edit_default_t_edit (const DdimDirection *d, const DdimSchedule *s)
{
  g_return_val_if_fail (d != NULL && s != NULL, 0);
  int t = d->space == DDIM_SPACE_X ? d->t_max : d->t_min;
  if (t >= 0 && t < s->num_train_timesteps)
    return t;
  return s->num_train_timesteps / 2;
}

static gboolean
check_t_edit (const DdimSchedule *s, int t_edit, GError **error)
{
  if (t_edit < 0 || t_edit >= s->num_train_timesteps)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the edit timestep must be between 0 and %d, not %d",
                   s->num_train_timesteps - 1, t_edit);
      return FALSE;
    }
  return TRUE;
}

/* Which decoder runs the edit: DDIM (z_pair NULL) or BDIA from the pair
 * (x, z_pair); where the model calls are counted (may be NULL). */
typedef struct {
  const float   *z_pair;
  double         gamma;
  DdimEditStats *stats;
} Decoder;

static gboolean
decode (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
        const DdimRunOptions *o, const DdimReverseHooks *hooks, const Decoder *dec,
        GError **error)
{
  DdimReverseHooks counting = { .stats = dec->stats };
  if (hooks == NULL && dec->stats)
    hooks = &counting;
  if (dec->z_pair)
    return ddim_reverse_run_bdia (unet, s, x, dec->z_pair, n, height, width, dec->gamma, o,
                                  hooks, 0, 0, error);
  return ddim_reverse_run (unet, s, x, n, height, width, o, hooks, 0, 0, error);
}

typedef struct {
  const float *delta;   /* one sample's displacement */
  gsize        per_sample;
  int          t_edit;
  int          x_step;  /* x-space: the step that adds it */
  /* A per-timestep direction: its displacement at each step's timestep
   * is written to scratch (which delta points to). */
  const DdimDirection *per_timestep;
  double       strength;
  int          hh, hw;
  float       *scratch;
} EditData;

static gboolean
wants_shift (int step, int t, gpointer data)
{
  (void) step;
  const EditData *e = data;
  return t >= e->t_edit;
}

/* Adds the displacement to every sample of @v [n, per_sample]. */
static void
add_per_sample (const EditData *e, float *v, gsize count)
{
  for (gsize off = 0; off + e->per_sample <= count; off += e->per_sample)
    for (gsize i = 0; i < e->per_sample; i++)
      v[off + i] += e->delta[i];
}

static void
shift_h (int step, int t, float *h, gsize count, gpointer data)
{
  (void) step;
  EditData *e = data;
  if (e->per_timestep)
    ddim_direction_expand (e->per_timestep, e->strength, t, e->hh, e->hw, e->scratch);
  add_per_sample (e, h, count);
}

/* Runs the reverse process with @e's h-space shift (e->delta, or for a
 * per-timestep direction its displacement at each step's timestep); fills
 * in the rest of @e from the model's h-space at @height x @width. */
static gboolean
run_hspace_edit (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
                 EditData *e, const DdimRunOptions *o, const Decoder *dec, GError **error)
{
  int hc;
  ddim_unet_hspace_shape (unet, height, width, &hc, &e->hh, &e->hw);
  e->per_sample = (gsize) hc * e->hh * e->hw;
  e->x_step = -1;
  g_autofree float *scratch = NULL;
  if (e->per_timestep)
    e->delta = e->scratch = scratch = g_new (float, e->per_sample);
  DdimReverseHooks hooks = { .wants_shift = wants_shift, .shift = shift_h, .data = e,
                             .stats = dec->stats };
  return decode (unet, s, x, n, height, width, o, &hooks, dec, error);
}

static void
shift_x (int step, int t, float *x, gsize count, gpointer data)
{
  (void) t;
  const EditData *e = data;
  if (step == e->x_step)
    add_per_sample (e, x, count);
}

static gboolean
edit_hspace (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
             const float *dh, int t_edit, const DdimRunOptions *o, const Decoder *dec,
             GError **error)
{
  if (!check_t_edit (s, t_edit, error))
    return FALSE;
  if (dh == NULL)
    return decode (unet, s, x, n, height, width, o, NULL, dec, error);
  if (!ddim_unet_check_size (unet, height, width, error))
    return FALSE;
  EditData e = { .delta = dh, .t_edit = t_edit };
  return run_hspace_edit (unet, s, x, n, height, width, &e, o, dec, error);
}

gboolean
ddim_edit_hspace (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
                  const float *dh, int t_edit, const DdimRunOptions *o, GError **error)
{
  g_return_val_if_fail (unet && s && x && o && n > 0, FALSE);
  Decoder dec = { 0 };
  return edit_hspace (unet, s, x, n, height, width, dh, t_edit, o, &dec, error);
}

static gboolean
edit_xspace (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
             const float *dx, int t_edit, const DdimRunOptions *o, const Decoder *dec,
             GError **error)
{
  if (!check_t_edit (s, t_edit, error))
    return FALSE;
  if (dx == NULL)
    return decode (unet, s, x, n, height, width, o, NULL, dec, error);
  g_autofree int *ts = ddim_schedule_timesteps (s, o->steps, o->spacing, error);
  if (ts == NULL)
    return FALSE;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  int x_step = ddim_reverse_step_at (ts, o->steps, t_edit);
  /* BDIA decoding starts with the second step. */
  if (dec->z_pair)
    x_step = MAX (x_step, 1);
  EditData e = { .delta = dx, .per_sample = (gsize) c->in_channels * height * width,
                 .t_edit = t_edit, .x_step = x_step };
  DdimReverseHooks hooks = { .before = shift_x, .data = &e, .stats = dec->stats };
  return decode (unet, s, x, n, height, width, o, &hooks, dec, error);
}

gboolean
ddim_edit_xspace (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
                  const float *dx, int t_edit, const DdimRunOptions *o, GError **error)
{
  g_return_val_if_fail (unet && s && x && o && n > 0, FALSE);
  Decoder dec = { 0 };
  return edit_xspace (unet, s, x, n, height, width, dx, t_edit, o, &dec, error);
}

static gboolean
edit_with (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
           const DdimDirection *d, double strength, int t_edit, const DdimRunOptions *o,
           const Decoder *dec, GError **error)
{
  if (!ddim_direction_check_strength (strength, error))
    return FALSE;
  if (!ddim_direction_check (d, unet, NULL, height, width, error))
    return FALSE;
  if (t_edit < 0)
    t_edit = ddim_edit_default_t_edit (d, s);
  if (strength == 0)
    return d->space == DDIM_SPACE_X
               ? edit_xspace (unet, s, x, n, height, width, NULL, t_edit, o, dec, error)
               : edit_hspace (unet, s, x, n, height, width, NULL, t_edit, o, dec, error);
  if (d->space == DDIM_SPACE_X)
    {
      g_autofree float *dx = g_new (float, ddim_direction_get_n_elements (d));
      ddim_direction_expand (d, strength, t_edit, height, width, dx);
      return edit_xspace (unet, s, x, n, height, width, dx, t_edit, o, dec, error);
    }
  if (d->n_timesteps > 0)
    {
      if (!check_t_edit (s, t_edit, error))
        return FALSE;
      EditData e = { .t_edit = t_edit, .per_timestep = d, .strength = strength };
      return run_hspace_edit (unet, s, x, n, height, width, &e, o, dec, error);
    }
  int hc, hh, hw;
  ddim_unet_hspace_shape (unet, height, width, &hc, &hh, &hw);
  g_autofree float *dh = g_new (float, (gsize) hc * hh * hw);
  ddim_direction_expand (d, strength, t_edit, hh, hw, dh);
  return edit_hspace (unet, s, x, n, height, width, dh, t_edit, o, dec, error);
}

gboolean
ddim_edit (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
           const DdimDirection *d, double strength, int t_edit, const DdimRunOptions *o,
           GError **error)
{
  g_return_val_if_fail (unet && s && x && d && o && n > 0, FALSE);
  Decoder dec = { 0 };
  return edit_with (unet, s, x, n, height, width, d, strength, t_edit, o, &dec, error);
}

gboolean
ddim_edit_bdia (DdimUNet *unet, const DdimSchedule *s, float *x, const float *z_pair, int n,
                int height, int width, double gamma, const DdimDirection *d, double strength,
                int t_edit, const DdimRunOptions *o, DdimEditStats *stats, GError **error)
{
  g_return_val_if_fail (unet && s && x && z_pair && d && o && n > 0, FALSE);
  Decoder dec = { z_pair, gamma, stats };
  return edit_with (unet, s, x, n, height, width, d, strength, t_edit, o, &dec, error);
}

/* ddim_edit counting its model calls (the DDIM decoder). */
gboolean
ddim_edit_counted (DdimUNet *unet, const DdimSchedule *s, float *x, int n, int height, int width,
                   const DdimDirection *d, double strength, int t_edit, const DdimRunOptions *o,
                   DdimEditStats *stats, GError **error)
{
  g_return_val_if_fail (unet && s && x && d && o && n > 0, FALSE);
  Decoder dec = { NULL, 0, stats };
  return edit_with (unet, s, x, n, height, width, d, strength, t_edit, o, &dec, error);
}
