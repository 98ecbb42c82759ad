/* plug-in-ddim-semantic-edit, "Semantic edit…": moves the layer (or the
 * selected part of it) along a semantic direction of the model and adds
 * the result as a new layer "Edit of <name>: <direction> ×<strength>".
 *
 * The region (the selection's bounds within the layer) is inverted, or a
 * latent of it is reused: one on a layer made by Invert to latent from
 * exactly these pixels (same region, same pixel checksum) with the same
 * model, steps, method and resolution. Run on such a latent layer, the
 * procedure works on the layer the latent was made from (found by its
 * tattoo), over the region that was inverted.
 *
 * The strength counts in the direction's recommended strength (its
 * strength_max): 1 is what the direction was made to be used at.
 *
 * Result "model": the edited image itself (deterministic DDIM from the
 * latent x_T with the edit, ddim/edit.h), resized to the region, through
 * the selection mask. Result "detail": it samples twice, once plain (the
 * reconstruction; ddim_edit at strength 0, which is ddim_sample bit for
 * bit) and once edited, and only the difference reaches the picture:
 * result = original + upsample (edited - reconstructed), at the layer's
 * full resolution, through the selection mask (a feathered selection
 * fades the edit out; outside it, and wherever the difference is 0, the
 * pixels are the original's bit for bit). Latents of EDICT and
 * BDIA are pairs; the edit samples from their first state with plain DDIM,
 * and since only the difference of two such samplings is used, that is
 * consistent. */
#include "ddim-plugin.h"

#include <math.h>
#include <string.h>

static void
edit_add_arguments (GimpProcedure *procedure)
{
  /* The library's edit defaults (issue #16: plain DDIM at 20 steps, the
   * edit decoded alone: 40 model evaluations for the embedded model's
   * measured 85.7% class-edit success, where 50 steps and a
   * reconstruction took 150). */
  DdimEditDefaults defaults;
  ddim_edit_defaults (&defaults);
  ddim_plugin_add_model_argument (procedure);
  ddim_plugin_add_inversion_arguments (procedure, defaults.method, defaults.steps);
  gimp_procedure_add_string_argument (procedure, "direction", _("_Direction"),
      _("A direction of the model: a name in its directions.safetensors or among the "
        "directions you made for it (Discover directions…, Fit direction from layers…), or "
        "component-N: the N-th unsupervised or PCA direction there, from 1; or the path of "
        "a directions file (holding one direction, or FILE#NAME)"),
      "component-1", G_PARAM_READWRITE);
  gimp_procedure_add_double_argument (procedure, "strength", _("S_trength"),
      _("How far to edit, in the direction's own units: 1 is its recommended strength, 2 "
        "twice that, a negative value the opposite way, 0 no change"),
      -100.0, 100.0, 1.0, G_PARAM_READWRITE);
  gimp_procedure_add_choice_argument (procedure, "result", _("Res_ult"),
      _("What the new layer holds"),
      gimp_choice_new_with_values (
          "detail", DDIM_EDIT_RESULT_DETAIL, _("Keep the photo's detail"),
          _("The photo plus the change the edit makes (detail the model cannot draw is "
            "kept; a whole-object change can leave a ghost of the original)"),
          "model", DDIM_EDIT_RESULT_MODEL, _("The model's output"),
          _("The edited image itself, resized to the region"),
          NULL),
      DDIM_PLUGIN_EDIT_RESULT_DEFAULT, G_PARAM_READWRITE);
  gimp_procedure_add_int_argument (procedure, "t-edit", _("_Edit starts at noise level"),
      _("The edit acts while the noise level (timestep) is at or above this one: lower "
        "changes finer details too (0 or -1: the direction's own)"),
      -1, 100000, -1, G_PARAM_READWRITE);
  gimp_procedure_add_layer_return_value (procedure, "edit-layer", _("Edited layer"),
      _("The new layer with the edit"), FALSE, G_PARAM_READWRITE);
}

/* @arg as a file: the whole string when it names a file, else the part
 * before the last '#' when that does (then *@name is the rest). NULL when
 * neither is a file. */
static char *
split_file_argument (const char *arg, char **name)
{
  *name = NULL;
  if (g_file_test (arg, G_FILE_TEST_IS_REGULAR))
    return g_strdup (arg);
  const char *hash = strrchr (arg, '#');
  if (hash != NULL && hash != arg)
    {
      g_autofree char *file = g_strndup (arg, hash - arg);
      if (g_file_test (file, G_FILE_TEST_IS_REGULAR))
        {
          *name = g_strdup (hash + 1);
          return g_steal_pointer (&file);
        }
    }
  return NULL;
}

/* The direction named by @arg (see the argument's help), borrowed from the
 * returned set: from a file given by path, else among the model's
 * directions and the user's own for it (@weights_sha256). */
static DdimDirectionSet *
resolve_direction (const char *arg, const char *model_folder, const char *weights_sha256,
                   DdimDirection **out, GError **error)
{
  g_autofree char *name = NULL;
  g_autofree char *file = arg && *arg ? split_file_argument (arg, &name) : NULL;
  g_autoptr (DdimDirectionSet) set = NULL;
  g_autofree char *where = NULL;
  if (file == NULL)
    {
      name = g_strdup (arg ? arg : "");
      if (strchr (name, G_DIR_SEPARATOR) != NULL || g_str_has_suffix (name, ".safetensors"))
        {
          ddim_plugin_set_error (error, _("There is no directions file “%s”."), name);
          return NULL;
        }
      set = ddim_plugin_load_directions (model_folder, weights_sha256, error);
      if (set == NULL)
        return NULL;
      if (ddim_direction_set_get_n (set) == 0)
        {
          ddim_plugin_set_error (error, _("The model in “%s” has no directions file (%s) and "
                                          "you have made no directions for it yet, so there "
                                          "is no direction “%s”. Make some with Filters ▸ "
                                          "Diffusion ▸ Discover directions… or Fit direction "
                                          "from layers… (or the ddim command-line tool: ddim "
                                          "directions pca|discover|fit, then give the path of "
                                          "the file as the direction)."),
                                 model_folder, DDIM_DIRECTIONS_FILE, name);
          return NULL;
        }
      if (*name == '\0')
        {
          g_autofree char *names = ddim_direction_set_list_names (set);
          ddim_plugin_set_error (error, _("Choose a direction; available: %s."), names);
          return NULL;
        }
      where = g_strdup_printf (_("the directions of the model in “%s”"), model_folder);
    }
  else
    {
      g_autoptr (GError) sub = NULL;
      set = ddim_direction_set_load (file, &sub);
      if (set == NULL)
        {
          ddim_plugin_set_error (error, _("The directions file “%s” cannot be read: %s."), file,
                                 sub->message);
          return NULL;
        }
      guint n = ddim_direction_set_get_n (set);
      if (name == NULL || *name == '\0')
        {
          if (n != 1)
            {
              g_autofree char *names = ddim_direction_set_list_names (set);
              ddim_plugin_set_error (error, _("The directions file “%s” holds %u directions "
                                              "(%s); choose one as “%s#NAME”."), file, n, names,
                                     file);
              return NULL;
            }
          *out = ddim_direction_set_get_nth (set, 0);
          return g_steal_pointer (&set);
        }
      where = g_strdup_printf ("“%s”", file);
    }
  *out = ddim_direction_set_lookup (set, name, NULL);
  if (*out == NULL)
    {
      g_autofree char *names = ddim_direction_set_list_names (set);
      ddim_plugin_set_error (error, _("There is no direction “%s” in %s; available: %s."),
                             name, where, names);
      return NULL;
    }
  return g_steal_pointer (&set);
}

DdimDirectionSet *
ddim_plugin_resolve_direction (const char *arg, DdimModel *model, DdimDirection **out,
                               GError **error)
{
  return resolve_direction (arg, model->path, model->weights_sha256, out, error);
}

static const char *const edit_main[] = { "strength", "result", NULL };
static const char *const edit_advanced[] = { "steps", "method", "resize", "t-edit", NULL };
static const DdimDialogSpec edit_dialog = {
  .title = N_("Semantic edit"), .direction = TRUE, .strength = TRUE, .preview = TRUE,
  .main = edit_main,
  .advanced = edit_advanced,
};

static GimpValueArray *
edit_run (GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image,
          GimpDrawable **drawables, GimpProcedureConfig *config, gpointer run_data)
{
  (void) run_data;
  GError *error = NULL;
  gegl_init (NULL, NULL);

  GimpLayer *selected = ddim_plugin_get_layer (image, drawables, &error);
  if (selected == NULL)
    return ddim_plugin_fail (procedure, error);

  /* On a latent layer: the layer it was made from, over the inverted
   * region. */
  GimpLayer *picture = selected, *latent_layer = NULL;
  g_autoptr (DdimSourceInfo) source = NULL;
  g_autoptr (GBytes) own_latent = ddim_plugin_get_parasite (GIMP_ITEM (selected),
                                                            DDIM_PARASITE_LATENT);
  if (own_latent != NULL)
    {
      g_autofree char *selected_name = gimp_item_get_name (GIMP_ITEM (selected));
      source = ddim_source_info_get (GIMP_ITEM (selected));
      GimpLayer *original = source ? gimp_image_get_layer_by_tattoo (image, source->tattoo)
                                   : NULL;
      if (original == NULL || original == selected
          || gimp_item_is_group (GIMP_ITEM (original)))
        {
          ddim_plugin_set_error (&error, _("Layer “%s” holds a latent, but the layer it was "
                                           "made from is no longer in the image. Run Semantic "
                                           "edit on the picture layer."), selected_name);
          return ddim_plugin_fail (procedure, error);
        }
      picture = original;
      latent_layer = selected;
    }
  GimpDrawable *drawable = GIMP_DRAWABLE (picture);
  g_autofree char *name = gimp_item_get_name (GIMP_ITEM (picture));

  if (run_mode == GIMP_RUN_INTERACTIVE
      && !ddim_plugin_dialog_run (procedure, config, &edit_dialog, drawable))
    return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);

  g_autofree char *folder = NULL;
  g_autofree char *direction_arg = NULL;
  int steps = 50, t_edit = -1;
  double strength = 0.0;
  g_object_get (config, "model-folder", &folder, "steps", &steps, "direction", &direction_arg,
                "strength", &strength, "t-edit", &t_edit, NULL);
  DdimInversionMethod method =
      (DdimInversionMethod) gimp_procedure_config_get_choice_id (config, "method");
  DdimEditResult result_mode =
      (DdimEditResult) gimp_procedure_config_get_choice_id (config, "result");
  gboolean native =
      gimp_procedure_config_get_choice_id (config, "resize") == DDIM_RESIZE_MODE_NATIVE;

  if (!isfinite (strength))
    {
      char text[G_ASCII_DTOSTR_BUF_SIZE];
      g_ascii_dtostr (text, sizeof text, strength);
      ddim_plugin_set_error (&error, _("The strength must be a finite number, not %s."), text);
      return ddim_plugin_fail (procedure, error);
    }

  /* The region, in the picture layer's coordinates. */
  int rx, ry, rw, rh, off_x, off_y;
  gboolean partial;
  gimp_drawable_get_offsets (drawable, &off_x, &off_y);
  int lw = gimp_drawable_get_width (drawable), lh = gimp_drawable_get_height (drawable);
  if (source != NULL && source->x - off_x >= 0 && source->y - off_y >= 0
      && source->x - off_x + source->width <= lw && source->y - off_y + source->height <= lh)
    {
      rx = source->x - off_x;
      ry = source->y - off_y;
      rw = source->width;
      rh = source->height;
      partial = rw != lw || rh != lh;
    }
  else if (!ddim_plugin_get_region (picture, TRUE, &rx, &ry, &rw, &rh, &partial, &error))
    return ddim_plugin_fail (procedure, error);

  /* The model: as given; none given on a latent layer, the one the latent
   * was made with when it is still there; else the embedded one. */
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
  DdimInvertSettings settings = { model, steps, method, native };
  int mw, mh;
  gboolean cancelled = FALSE;
  int evaluations = steps * ddim_plugin_method_evaluations (method)
                    + steps * (result_mode == DDIM_EDIT_RESULT_DETAIL ? 3 : 2);
  if (!ddim_plugin_confirm_long_run (run_mode, &settings, name, rw, rh, evaluations, &cancelled))
    return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);
  native = settings.native;
  if (!ddim_plugin_check_settings (&settings, name, rw, rh, partial, &mw, &mh, &error))
    return ddim_plugin_fail (procedure, error);

  DdimDirection *direction = NULL;
  g_autoptr (DdimDirectionSet) directions = resolve_direction (direction_arg, model_folder,
                                                               model->weights_sha256,
                                                               &direction, &error);
  if (directions == NULL)
    return ddim_plugin_fail (procedure, error);
  g_autoptr (GError) sub = NULL;
  if (!ddim_direction_check (direction, model->unet, model->weights_sha256, mh, mw, &sub))
    {
      ddim_plugin_set_error (&error, _("Direction “%s” cannot be used with the model in “%s”: "
                                       "%s. Use directions made for this model."),
                             direction->name, model_folder, sub->message);
      return ddim_plugin_fail (procedure, error);
    }
  /* The argument counts in the direction's recommended strength. */
  double raw_strength = strength * ddim_plugin_direction_unit (direction);
  int T = model->schedule->num_train_timesteps;
  if (t_edit >= T || t_edit < -1)
    {
      ddim_plugin_set_error (&error, _("The edit interval must start between 1 and %d (0 or "
                                       "-1: the direction's own), not at %d."), T - 1, t_edit);
      return ddim_plugin_fail (procedure, error);
    }
  if (t_edit <= 0)
    t_edit = -1;

  /* The latent: reused, or inverted now. */
  int C = ddim_unet_get_config (model->unet)->in_channels;
  g_autofree float *rgba = ddim_plugin_read_rgba (drawable, rx, ry, rw, rh);
  g_autofree char *checksum = ddim_plugin_pixels_checksum (rgba, rw, rh);
  g_autofree float *mask = ddim_plugin_read_selection (image, off_x + rx, off_y + ry, rw, rh);
  GimpLayer *found = NULL;
  g_autoptr (DdimLatent) latent = ddim_plugin_find_latent (image, latent_layer, picture,
                                                           off_x + rx, off_y + ry, rw, rh,
                                                           checksum, &settings, &found);
  if (latent == NULL)
    {
      g_autofree float *x0 = ddim_plugin_model_input (&settings, rgba, rw, rh, mw, mh);
      latent = ddim_plugin_invert (&settings, x0, mw, mh, rw, rh, &error);
      if (latent == NULL)
        return ddim_plugin_fail (procedure, error);
    }

  /* Keeping the detail: the reconstruction and the edit from the same
   * x_T, the same way; the model's output: the edit alone. */
  gboolean detail = result_mode == DDIM_EDIT_RESULT_DETAIL;
  gsize count = (gsize) C * mw * mh;
  g_autofree float *reference = detail ? g_memdup2 (latent->latent, count * sizeof (float))
                                       : NULL;
  g_autofree float *edited = g_memdup2 (latent->latent, count * sizeof (float));
  DdimProgress progress;
  ddim_plugin_progress_start (&progress, _("Editing"), _("Editing: step %d/%d"));
  progress.total = detail && strength != 0.0 ? 2 * latent->steps : latent->steps;
  double seconds = ddim_plugin_estimate_seconds (model, mw, mh, progress.total * 3 / 2);
  g_autofree char *eta = ddim_plugin_format_seconds (seconds);
  g_autofree char *estimate = seconds >= 0 ? g_strdup_printf (_("about %s in all"), eta) : NULL;
  progress.estimate = estimate;
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = latent->steps;
  o.spacing = latent->spacing;
  o.progress = ddim_plugin_progress_cb;
  o.progress_data = &progress;
  if (detail && !ddim_edit (model->unet, model->schedule, reference, 1, mh, mw, direction, 0.0,
                            t_edit, &o, &sub))
    {
      ddim_plugin_set_error (&error, _("Editing failed: %s"), sub->message);
      return ddim_plugin_fail (procedure, error);
    }
  if (detail && strength == 0.0)
    memcpy (edited, reference, count * sizeof (float));
  else
    {
      progress.offset = detail ? latent->steps : 0;
      if (!ddim_edit (model->unet, model->schedule, edited, 1, mh, mw, direction, raw_strength,
                      t_edit, &o, &sub))
        {
          ddim_plugin_set_error (&error, _("Editing failed: %s"), sub->message);
          return ddim_plugin_fail (procedure, error);
        }
    }

  /* Detail: original + upsample (edited - reconstructed); model: original
   * + (upsample (edited) - original), which is the edit itself; both
   * through the selection. */
  if (detail)
    for (gsize i = 0; i < count; i++)
      edited[i] -= reference[i];
  g_autofree float *delta = g_new (float, (gsize) C * rw * rh);
  if (native)
    ddim_pixels_crop (edited, C, mw, mh, delta, rw, rh);
  else
    ddim_pixels_resize (edited, C, mw, mh, delta, rw, rh, DDIM_RESIZE_SMOOTH);
  if (!detail)
    {
      g_autofree float *original = g_new (float, (gsize) C * rw * rh);
      ddim_pixels_rgba_to_tensor (rgba, rw, rh, C, original);
      for (gsize i = 0; i < (gsize) C * rw * rh; i++)
        delta[i] -= original[i];
    }
  ddim_pixels_rgba_add_delta (rgba, rw, rh, delta, C, mask);

  char strength_text[G_ASCII_DTOSTR_BUF_SIZE];
  g_ascii_formatd (strength_text, sizeof strength_text, "%g", strength);
  g_autofree char *new_name = g_strdup_printf (_("Edit of %s: %s ×%s"), name, direction->name,
                                               strength_text);

  /* Above the layer the procedure ran on, and above the latent layer it
   * reused when that is higher in the same stack. */
  GimpLayer *above = selected;
  if (found != NULL && found != selected
      && gimp_item_get_parent (GIMP_ITEM (found)) == gimp_item_get_parent (GIMP_ITEM (selected))
      && gimp_image_get_item_position (image, GIMP_ITEM (found))
             < gimp_image_get_item_position (image, GIMP_ITEM (selected)))
    above = found;

  return ddim_plugin_finish_with_layer (procedure, image, above, new_name, off_x + rx, off_y + ry,
                                        rw, rh, rgba, NULL, 0);
}

const DdimProcedureInfo ddim_semantic_edit_procedure = {
  .name = "plug-in-ddim-semantic-edit",
  .menu_label = N_("Semantic edit…"),
  .blurb = N_("Edit the layer along a semantic direction of a diffusion model"),
  .help = N_("Inverts the layer, or the selected part of it (or reuses a latent made from it by "
             "Invert to latent with the same settings), samples it back while moving along a "
             "direction of the model's semantic latent space, and adds the change, at the "
             "layer's full resolution and through the selection, as a new layer “Edit of "
             "<name>: <direction> ×<strength>”."),
  .icon = "ddim-semantic-edit.png",
  .add_arguments = edit_add_arguments,
  .run = edit_run,
};
