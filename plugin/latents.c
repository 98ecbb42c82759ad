/* Inversion as the procedures share it: the region a procedure works on,
 * the checks of the settings, the model input, the inversion itself, and
 * finding a latent made earlier by Invert to latent that can be reused
 * instead of inverting again. */
#include <stdio.h>

#include "ddim-plugin.h"

#include <math.h>

gboolean
ddim_plugin_get_region (GimpLayer *layer, gboolean use_selection, int *x, int *y, int *width,
                        int *height, gboolean *partial, GError **error)
{
  GimpDrawable *drawable = GIMP_DRAWABLE (layer);
  int lw = gimp_drawable_get_width (drawable), lh = gimp_drawable_get_height (drawable);
  if (!use_selection)
    {
      *x = *y = 0;
      *width = lw;
      *height = lh;
    }
  else if (!gimp_drawable_mask_intersect (drawable, x, y, width, height) || *width < 1
           || *height < 1)
    {
      g_autofree char *name = gimp_item_get_name (GIMP_ITEM (layer));
      ddim_plugin_set_error (error, _("The selection does not overlap layer “%s”. Select part "
                                      "of the layer, or use Select ▸ None to invert all of "
                                      "it."), name);
      return FALSE;
    }
  if (partial)
    *partial = *width != lw || *height != lh;
  return TRUE;
}

gboolean
ddim_plugin_check_settings (const DdimInvertSettings *settings, const char *name, int width,
                            int height, gboolean partial, int *mw, int *mh, GError **error)
{
  DdimModel *model = settings->model;
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  int factor = ddim_unet_config_size_factor (c);
  int min_side = MAX (DDIM_MIN_SIDE, factor);
  if (width < min_side || height < min_side)
    {
      ddim_plugin_set_error (error, partial
          ? _("The selected part of layer “%s” is too small (%d×%d pixels); this model needs "
              "at least %d×%d. Select a larger area.")
          : _("Layer “%s” is too small (%d×%d pixels); this model needs at least %d×%d. "
              "Scale the layer up first."), name, width, height, min_side, min_side);
      return FALSE;
    }
  if (settings->native && (width > DDIM_MAX_NATIVE_SIDE || height > DDIM_MAX_NATIVE_SIDE))
    {
      ddim_plugin_set_error (error, _("Layer “%s” is too large for native size (%d×%d pixels; "
                                      "at most %d a side). Choose “Fit to model size”, or "
                                      "select a smaller part."),
                             name, width, height, DDIM_MAX_NATIVE_SIDE);
      return FALSE;
    }
  if (settings->steps < 1 || settings->steps > model->schedule->num_train_timesteps)
    {
      ddim_plugin_set_error (error, _("Steps must be between 1 and %d (this model's training "
                                      "timesteps), not %d."),
                             model->schedule->num_train_timesteps, settings->steps);
      return FALSE;
    }
  if (settings->native)
    ddim_pixels_round_up_size (width, height, factor, mw, mh);
  else
    *mw = *mh = c->sample_size;
  return TRUE;
}

float *
ddim_plugin_model_input (const DdimInvertSettings *settings, const float *rgba, int width,
                         int height, int mw, int mh)
{
  int C = ddim_unet_get_config (settings->model->unet)->in_channels;
  g_autofree float *full = g_new (float, (gsize) C * width * height);
  ddim_pixels_rgba_to_tensor (rgba, width, height, C, full);
  float *x0 = g_new (float, (gsize) C * mw * mh);
  if (settings->native)
    ddim_pixels_pad (full, C, width, height, x0, mw, mh);
  else
    ddim_pixels_resize (full, C, width, height, x0, mw, mh, DDIM_RESIZE_SMOOTH);
  return x0;
}

DdimLatent *
ddim_plugin_invert (const DdimInvertSettings *settings, const float *x0, int mw, int mh,
                    int width, int height, GError **error)
{
  DdimModel *model = settings->model;
  DdimProgress progress;
  ddim_plugin_progress_start (&progress, _("Inverting"), _("Inverting: step %d/%d"));
  double seconds = ddim_plugin_estimate_seconds (model, mw, mh, settings->steps
                       * ddim_plugin_method_evaluations (settings->method));
  g_autofree char *eta = ddim_plugin_format_seconds (seconds);
  g_autofree char *estimate = seconds >= 0 ? g_strdup_printf (_("about %s in all"), eta) : NULL;
  progress.estimate = estimate;
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = settings->steps;
  o.progress = ddim_plugin_progress_cb;
  o.progress_data = &progress;
  g_autoptr (GError) sub = NULL;
  DdimLatent *latent = ddim_invert_with_method (model->unet, model->schedule, x0, mh, mw,
                                                settings->method, NULL, &o, NULL, &sub);
  if (latent == NULL)
    {
      ddim_plugin_set_error (error, _("Inversion failed: %s"), sub->message);
      return NULL;
    }
  latent->model_sha256 = g_strdup (model->weights_sha256);
  latent->image_width = width;
  latent->image_height = height;
  g_free (latent->resize);
  latent->resize = g_strdup (settings->native ? "native" : "fit");
  return latent;
}

char *
ddim_plugin_pixels_checksum (const float *rgba, int width, int height)
{
  /* Over the pixels rounded to 1/65535 (every 8- and 16-bit value lies
   * exactly on that grid): babl chooses its conversion paths by timing them
   * at run time, so two reads of the same 8-bit layer as float can differ
   * in the last bit (seen: 1/255 as 0.0039215684 and 0.0039215689). */
  gsize n = 4 * (gsize) width * height;
  g_autofree gint32 *grid = g_new (gint32, n);
  for (gsize i = 0; i < n; i++)
    {
      double v = isfinite (rgba[i]) ? rgba[i] * 65535.0 : 0.0;
      grid[i] = (gint32) lrint (CLAMP (v, -1073741824.0, 1073741824.0));
    }
  return g_compute_checksum_for_data (G_CHECKSUM_SHA256, (const guchar *) grid,
                                      sizeof (gint32) * n);
}

gboolean
ddim_plugin_latent_matches (const DdimLatent *latent, const DdimInvertSettings *settings,
                            int mw, int mh, int width, int height)
{
  DdimModel *model = settings->model;
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  return g_strcmp0 (latent->model_sha256, model->weights_sha256) == 0
         && latent->channels == ddim_unet_get_config (model->unet)->in_channels
         && latent->width == mw && latent->height == mh
         && latent->image_width == width && latent->image_height == height
         && latent->steps == settings->steps && latent->spacing == o.spacing
         && g_strcmp0 (latent->method, ddim_inversion_method_to_string (settings->method)) == 0
         && g_strcmp0 (latent->resize, settings->native ? "native" : "fit") == 0;
}

char *
ddim_plugin_latent_describe (const DdimLatent *latent)
{
  return g_strdup_printf (_("%d steps, method %s, %s"), latent->steps,
                          latent->method ? latent->method : "ddim",
                          latent->resize ? latent->resize : "fit");
}

/* @layer's latent when it was made from @source's region with @checksum
 * and @settings. */
static DdimLatent *
latent_of (GimpLayer *layer, GimpLayer *source, int x, int y, int width, int height,
           const char *checksum, const DdimInvertSettings *settings, int mw, int mh)
{
  g_autoptr (DdimSourceInfo) info = ddim_source_info_get (GIMP_ITEM (layer));
  if (info == NULL || info->tattoo != gimp_item_get_tattoo (GIMP_ITEM (source))
      || info->x != x || info->y != y || info->width != width || info->height != height
      || info->checksum == NULL || g_strcmp0 (info->checksum, checksum) != 0)
    return NULL;
  g_autoptr (GBytes) bytes = ddim_plugin_get_parasite (GIMP_ITEM (layer), DDIM_PARASITE_LATENT);
  if (bytes == NULL)
    return NULL;
  g_autoptr (DdimLatent) latent = ddim_latent_new_from_bytes (bytes,
                                                              settings->model->weights_sha256,
                                                              NULL);
  if (latent == NULL || !ddim_plugin_latent_matches (latent, settings, mw, mh, width, height))
    return NULL;
  return g_steal_pointer (&latent);
}

static void
collect_layers (GimpLayer **layers, GPtrArray *out)
{
  for (GimpLayer **l = layers; l && *l; l++)
    {
      if (gimp_item_is_group (GIMP_ITEM (*l)))
        {
          g_autofree GimpItem **children = gimp_item_get_children (GIMP_ITEM (*l));
          collect_layers ((GimpLayer **) children, out);
        }
      else
        g_ptr_array_add (out, *l);
    }
}

DdimLatent *
ddim_plugin_find_latent (GimpImage *image, GimpLayer *first, GimpLayer *source, int x, int y,
                         int width, int height, const char *checksum,
                         const DdimInvertSettings *settings, GimpLayer **found)
{
  int mw, mh;
  if (!ddim_plugin_check_settings (settings, "", width, height, FALSE, &mw, &mh, NULL))
    return NULL;
  g_autoptr (GPtrArray) candidates = g_ptr_array_new ();
  if (first != NULL)
    g_ptr_array_add (candidates, first);
  g_autofree GimpLayer **layers = gimp_image_get_layers (image);
  collect_layers (layers, candidates);
  for (guint i = 0; i < candidates->len; i++)
    {
      GimpLayer *layer = g_ptr_array_index (candidates, i);
      DdimLatent *latent = latent_of (layer, source, x, y, width, height, checksum, settings,
                                      mw, mh);
      if (latent != NULL)
        {
          g_autofree char *name = gimp_item_get_name (GIMP_ITEM (layer));
          g_autofree char *note = g_strdup_printf ("reusing the latent on layer “%s”", name);
          /* Shown with G_MESSAGES_DEBUG=ddim-inversion. GIMP does not always
           * pass a plug-in's stderr on before it quits, so the tests read it
           * from the file named by DDIM_PLUGIN_TRACE instead. */
          g_log ("ddim-inversion", G_LOG_LEVEL_DEBUG, "%s", note);
          const char *trace = g_getenv ("DDIM_PLUGIN_TRACE");
          if (trace && *trace)
            {
              FILE *f = fopen (trace, "a");
              if (f)
                {
                  fprintf (f, "%s\n", note);
                  fclose (f);
                }
            }
          if (found)
            *found = layer;
          return latent;
        }
    }
  return NULL;
}
