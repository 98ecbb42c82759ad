/* plug-in-ddim-reconstruct, "Reconstruct…": decodes the latent stored on a
 * layer made by Invert to latent into a new layer "Reconstruction of
 * <name>" at the inverted region's size and offsets.
 *
 * A latent of a region that was fitted to the model's size is decoded at
 * the model's size and resized (bilinear up, area average down) to the
 * region's size; there is no original to transfer detail from, because the
 * latent layer holds noise, not the picture. A native-size latent is
 * decoded at its (padded) size and cropped. The alpha is the latent
 * layer's, which is the source's alpha times the selection it was inverted
 * through. */
#include "ddim-plugin.h"

static void
reconstruct_add_arguments (GimpProcedure *procedure)
{
  ddim_plugin_add_model_argument (procedure);
  gimp_procedure_add_layer_return_value (procedure, "reconstruction-layer",
      _("Reconstruction layer"), _("The new layer with the reconstruction"), FALSE,
      G_PARAM_READWRITE);
}

static const DdimDialogSpec reconstruct_dialog = { .title = N_("Reconstruct") };

static GimpValueArray *
reconstruct_run (GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image,
                 GimpDrawable **drawables, GimpProcedureConfig *config, gpointer run_data)
{
  (void) run_data;
  GError *error = NULL;
  gegl_init (NULL, NULL);

  GimpLayer *layer = ddim_plugin_get_layer (image, drawables, &error);
  if (layer == NULL)
    return ddim_plugin_fail (procedure, error);
  g_autofree char *layer_name = gimp_item_get_name (GIMP_ITEM (layer));
  g_autoptr (GBytes) latent_bytes = ddim_plugin_get_parasite (GIMP_ITEM (layer),
                                                              DDIM_PARASITE_LATENT);
  if (latent_bytes == NULL)
    {
      ddim_plugin_set_error (&error, _("Layer “%s” has no latent; run Filters ▸ Diffusion ▸ "
                                       "Invert to latent… first, then reconstruct the layer "
                                       "it makes."), layer_name);
      return ddim_plugin_fail (procedure, error);
    }
  g_autoptr (GBytes) source_bytes = ddim_plugin_get_parasite (GIMP_ITEM (layer),
                                                              DDIM_PARASITE_SOURCE);
  g_autoptr (DdimSourceInfo) source = source_bytes
                                          ? ddim_source_info_new_from_bytes (source_bytes)
                                          : NULL;

  if (run_mode == GIMP_RUN_INTERACTIVE
      && !ddim_plugin_dialog_run (procedure, config, &reconstruct_dialog, NULL))
    return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);

  g_autofree char *folder = NULL;
  g_object_get (config, "model-folder", &folder, NULL);
  /* No folder given: the one the latent was made with, if it is still
   * there, else the embedded model. */
  if ((folder == NULL || *folder == '\0') && source != NULL && source->model_folder != NULL
      && *source->model_folder != '\0' && g_file_test (source->model_folder, G_FILE_TEST_IS_DIR))
    {
      g_free (folder);
      folder = g_strdup (source->model_folder);
    }

  g_autofree char *model_folder = NULL;
  g_autoptr (DdimModel) model = ddim_plugin_load_model (folder, &model_folder, &error);
  if (model == NULL)
    return ddim_plugin_fail (procedure, error);
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);

  g_autoptr (GError) sub = NULL;
  g_autoptr (DdimLatent) latent = ddim_latent_new_from_bytes (latent_bytes,
                                                              model->weights_sha256, &sub);
  gboolean wrong_model = FALSE;
  if (latent == NULL)
    {
      if (!g_error_matches (sub, DDIM_ERROR, DDIM_ERROR_MISMATCH))
        {
          ddim_plugin_set_error (&error, _("The latent on layer “%s” cannot be read: %s. Run "
                                           "Invert to latent… again."), layer_name,
                                 sub->message);
          return ddim_plugin_fail (procedure, error);
        }
      wrong_model = TRUE;
    }
  else if (latent->channels != c->in_channels
           || !ddim_unet_check_size (model->unet, latent->height, latent->width, NULL)
           || latent->steps > model->schedule->num_train_timesteps)
    wrong_model = TRUE;
  if (wrong_model)
    {
      if (source != NULL && source->model_folder != NULL && *source->model_folder != '\0')
        ddim_plugin_set_error (&error, _("The latent on layer “%s” was made with another model "
                                         "than the one in “%s”. Set “Model folder” to the model "
                                         "it was inverted with (“%s”)."),
                               layer_name, model_folder, source->model_folder);
      else
        ddim_plugin_set_error (&error, _("The latent on layer “%s” was made with another model "
                                         "than the one in “%s”. Set “Model folder” to the model "
                                         "it was inverted with."), layer_name, model_folder);
      return ddim_plugin_fail (procedure, error);
    }

  /* Where the result goes: the inverted region. */
  g_autofree char *source_name = NULL;
  int out_x, out_y, out_w, out_h;
  if (source != NULL)
    {
      source_name = g_strdup (source->name);
      out_x = source->x;
      out_y = source->y;
      out_w = source->width;
      out_h = source->height;
    }
  else
    {
      source_name = g_strdup (layer_name);
      gimp_drawable_get_offsets (GIMP_DRAWABLE (layer), &out_x, &out_y);
      out_w = latent->image_width > 0 ? latent->image_width
                                      : gimp_drawable_get_width (GIMP_DRAWABLE (layer));
      out_h = latent->image_height > 0 ? latent->image_height
                                       : gimp_drawable_get_height (GIMP_DRAWABLE (layer));
    }

  DdimProgress progress;
  ddim_plugin_progress_start (&progress, _("Reconstructing"), _("Reconstructing: step %d/%d"));
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.progress = ddim_plugin_progress_cb;
  o.progress_data = &progress;
  int C = latent->channels, lw = latent->width, lh = latent->height;
  g_autofree float *x = g_new (float, (gsize) C * lw * lh);
  if (!ddim_reconstruct_latent (model->unet, model->schedule, latent, x, &o, NULL, &sub))
    {
      ddim_plugin_set_error (&error, _("Reconstruction failed: %s"), sub->message);
      return ddim_plugin_fail (procedure, error);
    }

  gsize plane = (gsize) out_w * out_h;
  g_autofree float *out = g_new (float, C * plane);
  if (g_strcmp0 (latent->resize, "native") == 0 && out_w <= lw && out_h <= lh)
    ddim_pixels_crop (x, C, lw, lh, out, out_w, out_h);
  else
    ddim_pixels_resize (x, C, lw, lh, out, out_w, out_h, DDIM_RESIZE_SMOOTH);
  g_autofree float *alpha = ddim_plugin_read_alpha (GIMP_DRAWABLE (layer), out_w, out_h);
  g_autofree float *rgba = g_new (float, 4 * plane);
  ddim_pixels_tensor_to_rgba (out, C, out_w, out_h, alpha, rgba);
  g_autofree char *new_name = g_strdup_printf (_("Reconstruction of %s"), source_name);

  return ddim_plugin_finish_with_layer (procedure, image, layer, new_name, out_x, out_y, out_w,
                                        out_h, rgba, NULL, 0);
}

const DdimProcedureInfo ddim_reconstruct_procedure = {
  .name = "plug-in-ddim-reconstruct",
  .menu_label = N_("Reconstruct…"),
  .blurb = N_("Turn a latent made by Invert to latent back into pixels"),
  .help = N_("Runs deterministic DDIM sampling (or the exact method's decoder) from the latent "
             "stored on the selected layer and adds a layer “Reconstruction of <name>” at the "
             "original layer's size and position."),
  .icon = "ddim-reconstruct.png",
  .add_arguments = reconstruct_add_arguments,
  .run = reconstruct_run,
};
