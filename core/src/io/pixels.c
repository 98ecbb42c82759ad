/* Pixel buffers <-> model tensors, resizing, detail transfer, masks. */
#include "ddim/pixels.h"

#include <math.h>
#include <string.h>

static inline float
clampf (float v, float lo, float hi)
{
  return v < lo ? lo : v > hi ? hi : v;
}

float
ddim_pixels_luminance (float r, float g, float b)
{
  if (r == g && g == b)   /* gray stays exactly gray */
    return r;
  return 0.2126f * r + 0.7152f * g + 0.0722f * b;
}

void
ddim_pixels_rgba_to_tensor (const float *rgba, int width, int height, int channels, float *chw)
{
  g_return_if_fail (rgba != NULL && chw != NULL && width > 0 && height > 0);
  g_return_if_fail (channels == 1 || channels == 3);
  gsize plane = (gsize) width * height;
  for (gsize i = 0; i < plane; i++)
    {
      const float *p = rgba + 4 * i;
      if (channels == 1)
        chw[i] = 2.0f * ddim_pixels_luminance (p[0], p[1], p[2]) - 1.0f;
      else
        for (int c = 0; c < 3; c++)
          chw[c * plane + i] = 2.0f * p[c] - 1.0f;
    }
}

void
ddim_pixels_tensor_to_rgba (const float *chw, int channels, int width, int height,
                            const float *alpha, float *rgba)
{
  g_return_if_fail (chw != NULL && rgba != NULL && width > 0 && height > 0);
  g_return_if_fail (channels == 1 || channels == 3);
  gsize plane = (gsize) width * height;
  for (gsize i = 0; i < plane; i++)
    {
      float *p = rgba + 4 * i;
      for (int c = 0; c < 3; c++)
        {
          float x = chw[(channels == 1 ? 0 : c) * plane + i];
          p[c] = clampf ((x + 1.0f) * 0.5f, 0.0f, 1.0f);
        }
      p[3] = alpha ? clampf (alpha[i], 0.0f, 1.0f) : 1.0f;
    }
}

void
ddim_pixels_rgba_get_alpha (const float *rgba, int width, int height, float *alpha)
{
  g_return_if_fail (rgba != NULL && alpha != NULL && width > 0 && height > 0);
  gsize plane = (gsize) width * height;
  for (gsize i = 0; i < plane; i++)
    alpha[i] = rgba[4 * i + 3];
}

/* One axis of a resize: output i = sum_k weight[i*max_taps + k] * src[start[i] + k]. */
typedef struct {
  int    max_taps;
  int   *start;
  int   *count;
  float *weight;
} Taps;

static void
taps_clear (Taps *t)
{
  g_free (t->start);
  g_free (t->count);
  g_free (t->weight);
}

static void
taps_build (Taps *t, int src, int dst, DdimResizeFilter filter)
{
  double scale = (double) src / dst;
  if (filter == DDIM_RESIZE_NEAREST || dst >= src)
    t->max_taps = 2;
  else
    t->max_taps = (int) ceil (scale) + 1;
  t->start = g_new0 (int, dst);
  t->count = g_new0 (int, dst);
  t->weight = g_new0 (float, (gsize) dst * t->max_taps);
  for (int i = 0; i < dst; i++)
    {
      float *w = t->weight + (gsize) i * t->max_taps;
      if (filter == DDIM_RESIZE_NEAREST)
        {
          int s = (int) floor ((i + 0.5) * scale);
          t->start[i] = CLAMP (s, 0, src - 1);
          t->count[i] = 1;
          w[0] = 1.0f;
        }
      else if (dst >= src)
        {
          /* Bilinear between pixel centres; same size gives weight 1 on i. */
          double x = (i + 0.5) * scale - 0.5;
          int i0 = (int) floor (x);
          double frac = x - i0;
          if (i0 < 0)
            {
              i0 = 0;
              frac = 0;
            }
          if (i0 >= src - 1)
            {
              i0 = src - 1;
              frac = 0;
            }
          t->start[i] = i0;
          t->count[i] = frac > 0 ? 2 : 1;
          w[0] = (float) (1.0 - frac);
          w[1] = (float) frac;
        }
      else
        {
          /* Area average over [i*scale, (i+1)*scale). */
          double a = i * scale, b = (i + 1) * scale;
          int s0 = (int) floor (a);
          int s1 = MIN ((int) ceil (b), src);
          t->start[i] = s0;
          t->count[i] = s1 - s0;
          g_assert (t->count[i] <= t->max_taps);
          for (int s = s0; s < s1; s++)
            {
              double lo = MAX (a, (double) s), hi = MIN (b, (double) s + 1);
              w[s - s0] = (float) ((hi - lo) / scale);
            }
        }
    }
}

void
ddim_pixels_resize (const float *src, int channels, int width, int height, float *dst,
                    int dst_width, int dst_height, DdimResizeFilter filter)
{
  g_return_if_fail (src != NULL && dst != NULL && src != dst);
  g_return_if_fail (channels > 0 && width > 0 && height > 0 && dst_width > 0 && dst_height > 0);
  if (width == dst_width && height == dst_height)
    {
      memcpy (dst, src, sizeof (float) * channels * width * height);
      return;
    }
  Taps tx = { 0 }, ty = { 0 };
  taps_build (&tx, width, dst_width, filter);
  taps_build (&ty, height, dst_height, filter);
  /* Rows first: [C, height, dst_width], then columns. */
  g_autofree float *tmp = g_new (float, (gsize) channels * height * dst_width);
  for (int c = 0; c < channels; c++)
    for (int y = 0; y < height; y++)
      {
        const float *row = src + ((gsize) c * height + y) * width;
        float *out = tmp + ((gsize) c * height + y) * dst_width;
        for (int x = 0; x < dst_width; x++)
          {
            const float *w = tx.weight + (gsize) x * tx.max_taps;
            const float *s = row + tx.start[x];
            double acc = 0;
            for (int k = 0; k < tx.count[x]; k++)
              acc += (double) w[k] * s[k];
            out[x] = (float) acc;
          }
      }
  for (int c = 0; c < channels; c++)
    for (int y = 0; y < dst_height; y++)
      {
        const float *w = ty.weight + (gsize) y * ty.max_taps;
        float *out = dst + ((gsize) c * dst_height + y) * dst_width;
        const float *base = tmp + ((gsize) c * height + ty.start[y]) * dst_width;
        for (int x = 0; x < dst_width; x++)
          {
            double acc = 0;
            for (int k = 0; k < ty.count[y]; k++)
              acc += (double) w[k] * base[(gsize) k * dst_width + x];
            out[x] = (float) acc;
          }
      }
  taps_clear (&tx);
  taps_clear (&ty);
}

void
ddim_pixels_round_up_size (int width, int height, int factor, int *out_width, int *out_height)
{
  g_return_if_fail (factor >= 1 && width > 0 && height > 0);
  if (out_width)
    *out_width = (width + factor - 1) / factor * factor;
  if (out_height)
    *out_height = (height + factor - 1) / factor * factor;
}

void
ddim_pixels_pad (const float *src, int channels, int width, int height, float *dst,
                 int dst_width, int dst_height)
{
  g_return_if_fail (src != NULL && dst != NULL && src != dst);
  g_return_if_fail (dst_width >= width && dst_height >= height && width > 0 && height > 0);
  for (int c = 0; c < channels; c++)
    for (int y = 0; y < dst_height; y++)
      {
        const float *row = src + ((gsize) c * height + MIN (y, height - 1)) * width;
        float *out = dst + ((gsize) c * dst_height + y) * dst_width;
        memcpy (out, row, sizeof (float) * width);
        for (int x = width; x < dst_width; x++)
          out[x] = row[width - 1];
      }
}

void
ddim_pixels_crop (const float *src, int channels, int width, int height, float *dst,
                  int dst_width, int dst_height)
{
  g_return_if_fail (src != NULL && dst != NULL && src != dst);
  g_return_if_fail (dst_width <= width && dst_height <= height && dst_width > 0
                    && dst_height > 0);
  for (int c = 0; c < channels; c++)
    for (int y = 0; y < dst_height; y++)
      memcpy (dst + ((gsize) c * dst_height + y) * dst_width,
              src + ((gsize) c * height + y) * width, sizeof (float) * dst_width);
}

void
ddim_pixels_detail_transfer (const float *original, int channels, int width, int height,
                             const float *edited, const float *reference, int small_width,
                             int small_height, float *out)
{
  g_return_if_fail (original && edited && reference && out);
  g_return_if_fail (channels > 0 && width > 0 && height > 0 && small_width > 0
                    && small_height > 0);
  gsize small_n = (gsize) channels * small_width * small_height;
  g_autofree float *delta = g_new (float, small_n);
  for (gsize i = 0; i < small_n; i++)
    delta[i] = edited[i] - reference[i];
  gsize n = (gsize) channels * width * height;
  g_autofree float *up = g_new (float, n);
  ddim_pixels_resize (delta, channels, small_width, small_height, up, width, height,
                      DDIM_RESIZE_SMOOTH);
  for (gsize i = 0; i < n; i++)
    out[i] = clampf (original[i] + up[i], -1.0f, 1.0f);
}

void
ddim_pixels_blend_mask (float *result, const float *base, const float *mask, int channels,
                        int width, int height)
{
  g_return_if_fail (result != NULL && base != NULL);
  if (mask == NULL)
    return;
  gsize plane = (gsize) width * height;
  for (int c = 0; c < channels; c++)
    for (gsize i = 0; i < plane; i++)
      {
        gsize j = (gsize) c * plane + i;
        float m = clampf (mask[i], 0.0f, 1.0f);
        if (m < 1.0f)   /* exact at both ends: 0 gives base, 1 the result */
          result[j] = m > 0.0f ? base[j] + m * (result[j] - base[j]) : base[j];
      }
}

void
ddim_pixels_rgba_add_delta (float *rgba, int width, int height, const float *delta,
                            int channels, const float *mask)
{
  g_return_if_fail (rgba != NULL && delta != NULL && width > 0 && height > 0);
  g_return_if_fail (channels == 1 || channels == 3);
  gsize plane = (gsize) width * height;
  for (gsize i = 0; i < plane; i++)
    {
      float m = mask ? clampf (mask[i], 0.0f, 1.0f) : 1.0f;
      if (m == 0.0f)
        continue;
      for (int c = 0; c < 3; c++)
        {
          float d = m * 0.5f * delta[(gsize) (channels == 1 ? 0 : c) * plane + i];
          if (d != 0.0f)
            rgba[4 * i + c] = clampf (rgba[4 * i + c] + d, 0.0f, 1.0f);
        }
    }
}

void
ddim_pixels_mix (const float *a, const float *b, gsize n, double t, float *out)
{
  g_return_if_fail (a != NULL && b != NULL && out != NULL);
  for (gsize i = 0; i < n; i++)
    out[i] = t == 0.0 ? a[i] : t == 1.0 ? b[i] : (float) (a[i] + t * (b[i] - a[i]));
}

void
ddim_pixels_apply_mask (float *alpha, const float *mask, int width, int height)
{
  g_return_if_fail (alpha != NULL);
  if (mask == NULL)
    return;
  gsize plane = (gsize) width * height;
  for (gsize i = 0; i < plane; i++)
    alpha[i] *= clampf (mask[i], 0.0f, 1.0f);
}

void
ddim_pixels_latent_to_display (const float *latent, gsize n, float *out)
{
  g_return_if_fail (latent != NULL && out != NULL);
  for (gsize i = 0; i < n; i++)
    out[i] = clampf (latent[i] / 3.0f, -1.0f, 1.0f);
}
