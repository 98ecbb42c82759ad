/* plug-in-ddim-invert, "Invert to latent…": the layer (or the selected
 * part of it) becomes the latent of the model, shown as a new layer
 * "Latent of <name>" that carries the latent file as the persistent
 * parasite ddim-inversion/latent (and where it came from as
 * ddim-inversion/source). */
#include "ddim-plugin.h"

static void
invert_add_arguments (GimpProcedure *procedure)
{
  ddim_plugin_add_model_argument (procedure);
  ddim_plugin_add_inversion_arguments (procedure, DDIM_PLUGIN_INVERT_METHOD_DEFAULT,
                                       DDIM_PLUGIN_INVERT_STEPS_DEFAULT);
  gimp_procedure_add_string_argument (procedure, "latent-file", _("Also save latent _to file"),
      _("A file to write the latent to as well (safetensors, for the ddim command-line "
        "tool); empty: none"),
      "", G_PARAM_READWRITE);
  gimp_procedure_add_layer_return_value (procedure, "latent-layer", _("Latent layer"),
      _("The new layer showing the latent"), FALSE, G_PARAM_READWRITE);
}

static const char *const invert_main[] = { "latent-file", NULL };
static const char *const invert_advanced[] = { "steps", "method", "resize", NULL };
static const DdimDialogSpec invert_dialog = {
  .title = N_("Invert to latent"), .main = invert_main, .advanced = invert_advanced,
};

static GimpValueArray *
invert_run (GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image,
            GimpDrawable **drawables, GimpProcedureConfig *config, gpointer run_data)
{
  (void) run_data;
  GError *error = NULL;
  gegl_init (NULL, NULL);

  GimpLayer *layer = ddim_plugin_get_layer (image, drawables, &error);
  if (layer == NULL)
    return ddim_plugin_fail (procedure, error);
  GimpDrawable *drawable = GIMP_DRAWABLE (layer);
  g_autofree char *name = gimp_item_get_name (GIMP_ITEM (layer));

  if (run_mode == GIMP_RUN_INTERACTIVE
      && !ddim_plugin_dialog_run (procedure, config, &invert_dialog, NULL))
    return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);

  g_autofree char *folder = NULL;
  g_autofree char *latent_file = NULL;
  int steps = 50;
  g_object_get (config, "model-folder", &folder, "steps", &steps, "latent-file", &latent_file,
                NULL);
  DdimInversionMethod method =
      (DdimInversionMethod) gimp_procedure_config_get_choice_id (config, "method");
  gboolean native =
      gimp_procedure_config_get_choice_id (config, "resize") == DDIM_RESIZE_MODE_NATIVE;

  /* The region: the selection's bounds within the layer (all of it when
   * nothing is selected). */
  int rx, ry, rw, rh, off_x, off_y;
  gboolean partial;
  if (!ddim_plugin_get_region (layer, TRUE, &rx, &ry, &rw, &rh, &partial, &error))
    return ddim_plugin_fail (procedure, error);
  gimp_drawable_get_offsets (drawable, &off_x, &off_y);

  g_autofree char *model_folder = NULL;
  g_autoptr (DdimModel) model = ddim_plugin_load_model (folder, &model_folder, &error);
  if (model == NULL)
    return ddim_plugin_fail (procedure, error);
  DdimInvertSettings settings = { model, steps, method, native };
  int mw, mh;
  gboolean cancelled = FALSE;
  if (!ddim_plugin_confirm_long_run (run_mode, &settings, name, rw, rh,
                                     steps * ddim_plugin_method_evaluations (method),
                                     &cancelled))
    return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);
  native = settings.native;
  if (!ddim_plugin_check_settings (&settings, name, rw, rh, partial, &mw, &mh, &error))
    return ddim_plugin_fail (procedure, error);

  /* Pixels -> model input. */
  int C = ddim_unet_get_config (model->unet)->in_channels;
  gsize plane = (gsize) rw * rh;
  g_autofree float *rgba = ddim_plugin_read_rgba (drawable, rx, ry, rw, rh);
  g_autofree char *checksum = ddim_plugin_pixels_checksum (rgba, rw, rh);
  g_autofree float *alpha = g_new (float, plane);
  ddim_pixels_rgba_get_alpha (rgba, rw, rh, alpha);
  g_autofree float *mask = ddim_plugin_read_selection (image, off_x + rx, off_y + ry, rw, rh);
  ddim_pixels_apply_mask (alpha, mask, rw, rh);
  g_autofree float *x0 = ddim_plugin_model_input (&settings, rgba, rw, rh, mw, mh);

  /* Inversion (GIMP kills the process on cancel: nothing is touched yet). */
  g_autoptr (DdimLatent) latent = ddim_plugin_invert (&settings, x0, mw, mh, rw, rh, &error);
  if (latent == NULL)
    return ddim_plugin_fail (procedure, error);
  g_autoptr (GBytes) latent_bytes = ddim_latent_to_bytes (latent);

  g_autoptr (GError) sub = NULL;
  if (latent_file != NULL && *latent_file != '\0'
      && !ddim_latent_save (latent, latent_file, &sub))
    {
      ddim_plugin_set_error (&error, _("Cannot save the latent to “%s”: %s"), latent_file,
                             sub->message);
      return ddim_plugin_fail (procedure, error);
    }

  /* The latent, made visible at the region's size. */
  g_autofree float *display = g_new (float, (gsize) C * mw * mh);
  ddim_pixels_latent_to_display (latent->latent, (gsize) C * mw * mh, display);
  g_autofree float *shown = g_new (float, C * plane);
  if (native)
    ddim_pixels_crop (display, C, mw, mh, shown, rw, rh);
  else
    ddim_pixels_resize (display, C, mw, mh, shown, rw, rh, DDIM_RESIZE_NEAREST);
  ddim_pixels_tensor_to_rgba (shown, C, rw, rh, alpha, rgba);

  DdimSourceInfo source = {
    .name = name, .x = off_x + rx, .y = off_y + ry, .width = rw, .height = rh,
    .tattoo = gimp_item_get_tattoo (GIMP_ITEM (layer)), .model_folder = model_folder,
    .checksum = checksum,
  };
  g_autoptr (GBytes) source_bytes = ddim_source_info_to_bytes (&source);
  g_autofree char *new_name = g_strdup_printf (_("Latent of %s"), name);

  /* Only now the image changes, in one undo step. */
  const DdimPluginParasite parasites[] = {
    { DDIM_PARASITE_LATENT, latent_bytes },
    { DDIM_PARASITE_SOURCE, source_bytes },
  };
  return ddim_plugin_finish_with_layer (procedure, image, layer, new_name, off_x + rx,
                                        off_y + ry, rw, rh, rgba, parasites,
                                        G_N_ELEMENTS (parasites));
}

const DdimProcedureInfo ddim_invert_procedure = {
  .name = "plug-in-ddim-invert",
  .menu_label = N_("Invert to latent…"),
  .blurb = N_("Invert the layer into the latent noise of a diffusion model"),
  .help = N_("Runs DDIM inversion (or an exact variant) of the layer, or of the selected part "
             "of it, and adds a layer “Latent of <name>” that shows the latent and stores it "
             "(saved with the XCF file). Reconstruct… turns it back into pixels."),
  .icon = "ddim-invert.png",
  .add_arguments = invert_add_arguments,
  .run = invert_run,
};
