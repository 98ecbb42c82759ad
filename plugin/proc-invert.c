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
  gimp_procedure_add_int_argument (procedure, "steps", _("_Steps"),
      _("Number of DDIM steps (more: slower, closer to the exact inverse)"),
      1, 1000, 50, G_PARAM_READWRITE);
  gimp_procedure_add_choice_argument (procedure, "method", _("Inversion _method"),
      _("How the image is inverted"),
      gimp_choice_new_with_values (
          "ddim", DDIM_METHOD_DDIM, _("DDIM"),
          _("Plain DDIM inversion: one model evaluation per step, approximate"),
          "fixed-point", DDIM_METHOD_FIXED_POINT, _("Fixed-point"),
          _("Each step solved by fixed-point iteration: several evaluations per step, "
            "closer to exact"),
          "edict", DDIM_METHOD_EDICT, _("EDICT"),
          _("Two coupled sequences, exactly invertible: two evaluations per step"),
          "bdia", DDIM_METHOD_BDIA, _("BDIA"),
          _("Bidirectional integration, exactly invertible: one evaluation per step"),
          NULL),
      "ddim", G_PARAM_READWRITE);
  gimp_procedure_add_choice_argument (procedure, "resize", _("_Resolution"),
      _("How the layer's size is matched to the model"),
      gimp_choice_new_with_values (
          "fit", DDIM_RESIZE_MODE_FIT, _("Fit to model size (detail transfer)"),
          _("Resize to the model's size; results are brought back to the layer's size"),
          "native", DDIM_RESIZE_MODE_NATIVE, _("Native size (fully convolutional)"),
          _("Run the model at the layer's own size (padded to the model's size factor)"),
          NULL),
      "fit", G_PARAM_READWRITE);
  gimp_procedure_add_string_argument (procedure, "latent-file", _("Also save latent _to file"),
      _("A file to write the latent to as well (safetensors, for the ddim command-line "
        "tool); empty: none"),
      "", G_PARAM_READWRITE);
  gimp_procedure_add_layer_return_value (procedure, "latent-layer", _("Latent layer"),
      _("The new layer showing the latent"), FALSE, G_PARAM_READWRITE);
}

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
      && !ddim_plugin_dialog (procedure, config, _("Invert to latent")))
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
  if (!gimp_drawable_mask_intersect (drawable, &rx, &ry, &rw, &rh) || rw < 1 || rh < 1)
    {
      ddim_plugin_set_error (&error, _("The selection does not overlap layer “%s”. Select part "
                                       "of the layer, or use Select ▸ None to invert all of "
                                       "it."), name);
      return ddim_plugin_fail (procedure, error);
    }
  gimp_drawable_get_offsets (drawable, &off_x, &off_y);
  gboolean partial = rw != gimp_drawable_get_width (drawable)
                     || rh != gimp_drawable_get_height (drawable);

  g_autofree char *model_folder = NULL;
  g_autoptr (DdimModel) model = ddim_plugin_load_model (folder, &model_folder, &error);
  if (model == NULL)
    return ddim_plugin_fail (procedure, error);
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  int factor = ddim_unet_config_size_factor (c);
  int min_side = MAX (DDIM_MIN_SIDE, factor);
  if (rw < min_side || rh < min_side)
    {
      ddim_plugin_set_error (&error, partial
          ? _("The selected part of layer “%s” is too small (%d×%d pixels); this model needs "
              "at least %d×%d. Select a larger area.")
          : _("Layer “%s” is too small (%d×%d pixels); this model needs at least %d×%d. "
              "Scale the layer up first."), name, rw, rh, min_side, min_side);
      return ddim_plugin_fail (procedure, error);
    }
  if (native && (rw > DDIM_MAX_NATIVE_SIDE || rh > DDIM_MAX_NATIVE_SIDE))
    {
      ddim_plugin_set_error (&error, _("Layer “%s” is too large for native size (%d×%d pixels; "
                                       "at most %d a side). Choose “Fit to model size”, or "
                                       "select a smaller part."),
                             name, rw, rh, DDIM_MAX_NATIVE_SIDE);
      return ddim_plugin_fail (procedure, error);
    }
  if (steps < 1 || steps > model->schedule->num_train_timesteps)
    {
      ddim_plugin_set_error (&error, _("Steps must be between 1 and %d (this model's training "
                                       "timesteps), not %d."),
                             model->schedule->num_train_timesteps, steps);
      return ddim_plugin_fail (procedure, error);
    }

  /* Pixels -> model input. */
  int C = c->in_channels;
  gsize plane = (gsize) rw * rh;
  g_autofree float *rgba = ddim_plugin_read_rgba (drawable, rx, ry, rw, rh);
  g_autofree float *alpha = g_new (float, plane);
  ddim_pixels_rgba_get_alpha (rgba, rw, rh, alpha);
  g_autofree float *mask = ddim_plugin_read_selection (image, off_x + rx, off_y + ry, rw, rh);
  ddim_pixels_apply_mask (alpha, mask, rw, rh);
  g_autofree float *full = g_new (float, C * plane);
  ddim_pixels_rgba_to_tensor (rgba, rw, rh, C, full);

  int mw, mh;
  if (native)
    ddim_pixels_round_up_size (rw, rh, factor, &mw, &mh);
  else
    mw = mh = c->sample_size;
  g_autofree float *x0 = g_new (float, (gsize) C * mw * mh);
  if (native)
    ddim_pixels_pad (full, C, rw, rh, x0, mw, mh);
  else
    ddim_pixels_resize (full, C, rw, rh, x0, mw, mh, DDIM_RESIZE_SMOOTH);

  /* Inversion (GIMP kills the process on cancel: nothing is touched yet). */
  DdimProgress progress;
  ddim_plugin_progress_start (&progress, _("Inverting"), _("Inverting: step %d/%d"));
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = steps;
  o.progress = ddim_plugin_progress_cb;
  o.progress_data = &progress;
  g_autoptr (GError) sub = NULL;
  g_autoptr (DdimLatent) latent = ddim_invert_with_method (model->unet, model->schedule, x0, mh,
                                                           mw, method, NULL, &o, NULL, &sub);
  if (latent == NULL)
    {
      ddim_plugin_set_error (&error, _("Inversion failed: %s"), sub->message);
      return ddim_plugin_fail (procedure, error);
    }
  latent->model_sha256 = g_strdup (model->weights_sha256);
  latent->image_width = rw;
  latent->image_height = rh;
  g_free (latent->resize);
  latent->resize = g_strdup (native ? "native" : "fit");
  g_autoptr (GBytes) latent_bytes = ddim_latent_to_bytes (latent);

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
  };
  g_autoptr (GBytes) source_bytes = ddim_source_info_to_bytes (&source);
  g_autofree char *new_name = g_strdup_printf (_("Latent of %s"), name);

  /* Only now the image changes, in one undo step. */
  gimp_image_undo_group_start (image);
  GimpLayer *result = ddim_plugin_new_layer (image, new_name, rw, rh, rgba);
  gimp_layer_set_offsets (result, off_x + rx, off_y + ry);
  ddim_plugin_insert_above (image, result, layer);
  gboolean ok = ddim_plugin_attach (GIMP_ITEM (result), DDIM_PARASITE_LATENT, latent_bytes,
                                    &error)
                && ddim_plugin_attach (GIMP_ITEM (result), DDIM_PARASITE_SOURCE, source_bytes,
                                       &error);
  if (!ok)
    gimp_image_remove_layer (image, result);
  gimp_image_undo_group_end (image);
  if (!ok)
    return ddim_plugin_fail (procedure, error);
  gimp_progress_end ();

  GimpValueArray *values = gimp_procedure_new_return_values (procedure, GIMP_PDB_SUCCESS, NULL);
  GIMP_VALUES_SET_LAYER (values, 1, result);
  return values;
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
