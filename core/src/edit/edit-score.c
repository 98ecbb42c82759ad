/* Success and outside-the-shape PSNR of edits (see ddim/edit-score.h). */
#include <math.h>
#include <string.h>

#include "ddim/edit-score.h"

/* 1 where some channel of @x is above @threshold. */
static void
mark_foreground (const float *x, int channels, gsize plane, double threshold, guint8 *fg)
{
  for (int c = 0; c < channels; c++)
    for (gsize p = 0; p < plane; p++)
      if (x[(gsize) c * plane + p] > threshold)
        fg[p] = 1;
}

gsize
ddim_changed_shape_mask (const float *a, const float *b, int channels, int height, int width,
                         double threshold, int dilate, guint8 *mask)
{
  g_return_val_if_fail (a && b && mask && channels > 0 && height > 0 && width > 0, 0);
  gsize plane = (gsize) height * width;
  g_autofree guint8 *fg = g_new0 (guint8, plane);
  mark_foreground (a, channels, plane, threshold, fg);
  mark_foreground (b, channels, plane, threshold, fg);
  int r = MAX (dilate, 0);
  gsize inside = 0;
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width; x++)
      {
        guint8 in = 0;
        for (int yy = MAX (y - r, 0); yy <= MIN (y + r, height - 1) && !in; yy++)
          for (int xx = MAX (x - r, 0); xx <= MIN (x + r, width - 1) && !in; xx++)
            in = fg[(gsize) yy * width + xx];
        mask[(gsize) y * width + x] = in;
        inside += in;
      }
  return inside;
}

void
ddim_edit_score_init (DdimEditScore *s, double threshold, int dilate)
{
  g_return_if_fail (s != NULL);
  memset (s, 0, sizeof *s);
  s->threshold = threshold;
  s->dilate = dilate;
}

void
ddim_edit_score_add (DdimEditScore *s, const float *sources, const float *edits,
                     const int *predicted, int target, int n, int channels, int height,
                     int width)
{
  g_return_if_fail (s && sources && edits && n >= 0 && channels > 0 && height > 0 && width > 0);
  gsize plane = (gsize) height * width, per = (gsize) channels * plane;
  g_autofree guint8 *mask = g_new (guint8, plane);
  for (int i = 0; i < n; i++)
    {
      const float *a = sources + (gsize) i * per, *b = edits + (gsize) i * per;
      s->n_inside += ddim_changed_shape_mask (a, b, channels, height, width, s->threshold,
                                              s->dilate, mask);
      s->n_positions += plane;
      for (int c = 0; c < channels; c++)
        for (gsize p = 0; p < plane; p++)
          if (!mask[p])
            {
              double d = ((double) a[(gsize) c * plane + p] - b[(gsize) c * plane + p]) / 2;
              s->sq_error += d * d;
              s->n_outside++;
            }
      s->n++;
      if (predicted)
        {
          s->n_classified++;
          s->n_success += predicted[i] == target;
        }
    }
}

double
ddim_edit_score_success (const DdimEditScore *s)
{
  return s->n_classified > 0 ? (double) s->n_success / s->n_classified : NAN;
}

double
ddim_edit_score_psnr (const DdimEditScore *s)
{
  if (s->n_outside == 0)
    return NAN;
  double mse = s->sq_error / (double) s->n_outside;
  return mse > 0 ? 10 * log10 (1 / mse) : INFINITY;
}

double
ddim_edit_score_inside_share (const DdimEditScore *s)
{
  return s->n_positions > 0 ? (double) s->n_inside / (double) s->n_positions : NAN;
}
