/* The procedures' dialogs: GimpProcedureDialog, with the model chosen from
 * a drop-down of the models found (ddim_plugin_list_models) plus "Other
 * folder…", and, for Semantic edit, the direction from a drop-down of the
 * chosen model's directions that follows the model. Both write the string
 * arguments "model-folder" and "direction", so last values, Script-Fu and
 * the dialog share one set of arguments; the rest of the dialog is
 * GimpProcedureDialog's own widgets, the technical settings in a collapsed
 * "Advanced" section. */
#include "ddim-plugin.h"

#include <libgimp/gimpui.h>
#include <string.h>

/* The model drop-down's entry that opens a folder chooser; model ids are
 * "" or absolute paths, so it cannot clash. */
#define OTHER_FOLDER_ID "ddim-other-folder"

typedef struct {
  GimpProcedureConfig *config;
  GtkWidget           *dialog;
  GtkWidget           *model_combo;
  GtkWidget           *direction_combo;   /* NULL: the procedure has no direction */
  GtkWidget           *message;
  char                *current_model;     /* the model id selected before "Other folder…" */
} DialogState;

static void
set_message (DialogState *state, const char *text)
{
  gtk_label_set_text (GTK_LABEL (state->message), text ? text : "");
  gtk_widget_set_visible (state->message, text != NULL && *text != '\0');
}

static gboolean
combo_has_id (GtkWidget *combo, const char *id)
{
  GtkTreeModel *model = gtk_combo_box_get_model (GTK_COMBO_BOX (combo));
  int column = gtk_combo_box_get_id_column (GTK_COMBO_BOX (combo));
  GtkTreeIter iter;
  gboolean valid = gtk_tree_model_get_iter_first (model, &iter);
  while (valid)
    {
      g_autofree char *value = NULL;
      gtk_tree_model_get (model, &iter, column, &value, -1);
      if (g_strcmp0 (value, id) == 0)
        return TRUE;
      valid = gtk_tree_model_iter_next (model, &iter);
    }
  return FALSE;
}

/* The accessible description carries the entry shown (the name is the
 * control's label), for screen readers and the dialog tests. */
static void
describe_active (GtkComboBox *combo)
{
  g_autofree char *text = gtk_combo_box_text_get_active_text (GTK_COMBO_BOX_TEXT (combo));
  atk_object_set_description (gtk_widget_get_accessible (GTK_WIDGET (combo)), text ? text : "");
}

static int
combo_count (GtkWidget *combo)
{
  return gtk_tree_model_iter_n_children (gtk_combo_box_get_model (GTK_COMBO_BOX (combo)), NULL);
}

/* Fills the direction drop-down with the directions of the model @id. */
static void
refresh_directions (DialogState *state, const char *id)
{
  GtkComboBoxText *combo = GTK_COMBO_BOX_TEXT (state->direction_combo);
  g_autofree char *current = NULL;
  g_object_get (state->config, "direction", &current, NULL);
  gtk_combo_box_text_remove_all (combo);

  g_autoptr (GError) error = NULL;
  g_autofree char *folder = NULL;
  g_autoptr (DdimModel) model = ddim_plugin_load_model (id, &folder, &error);
  g_autoptr (DdimDirectionSet) set = model
      ? ddim_plugin_load_directions (folder, model->weights_sha256, &error) : NULL;
  if (set == NULL)
    {
      set_message (state, error->message);
      gtk_widget_set_sensitive (state->direction_combo, FALSE);
      return;
    }
  guint n = ddim_direction_set_get_n (set);
  for (guint i = 0; i < n; i++)
    {
      DdimDirection *d = ddim_direction_set_get_nth (set, i);
      g_autofree char *label = ddim_plugin_direction_label (d);
      gtk_combo_box_text_append (combo, d->name, label);
    }
  /* A directions file given by path (Script-Fu, last values) stays. */
  if (current != NULL && *current != '\0' && !combo_has_id (state->direction_combo, current)
      && (strchr (current, G_DIR_SEPARATOR) != NULL || strchr (current, '#') != NULL))
    gtk_combo_box_text_append (combo, current, current);
  gtk_widget_set_sensitive (state->direction_combo, combo_count (state->direction_combo) > 0);
  if (combo_count (state->direction_combo) == 0)
    {
      set_message (state, _("This model has no directions yet. Make some with Filters ▸ "
                            "Diffusion ▸ Discover directions… or Fit direction from "
                            "layers…, or choose another model."));
      return;
    }
  set_message (state, NULL);
  if (current == NULL || !gtk_combo_box_set_active_id (GTK_COMBO_BOX (combo), current))
    {
      /* "component-N" and other names the library resolves: keep the
       * name when the model resolves it, else the first direction. */
      DdimDirection *d = current && *current ? ddim_direction_set_lookup (set, current, NULL)
                                             : NULL;
      if (d == NULL || !gtk_combo_box_set_active_id (GTK_COMBO_BOX (combo), d->name))
        gtk_combo_box_set_active (GTK_COMBO_BOX (combo), 0);
    }
}

static void
on_direction_changed (GtkComboBox *combo, DialogState *state)
{
  const char *id = gtk_combo_box_get_active_id (combo);
  describe_active (combo);
  if (id != NULL)
    g_object_set (state->config, "direction", id, NULL);
}

/* Asks for a model folder; its id, or NULL when cancelled. Reports a
 * folder the library cannot read in the message line. */
static char *
choose_other_folder (DialogState *state)
{
  GtkWidget *chooser = gtk_file_chooser_dialog_new (_("Choose a model folder"),
                                                    GTK_WINDOW (state->dialog),
                                                    GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER,
                                                    _("_Cancel"), GTK_RESPONSE_CANCEL,
                                                    _("_Select"), GTK_RESPONSE_ACCEPT, NULL);
  g_autofree char *user = ddim_plugin_user_models_dir ();
  if (g_file_test (user, G_FILE_TEST_IS_DIR))
    gtk_file_chooser_set_current_folder (GTK_FILE_CHOOSER (chooser), user);
  g_autofree char *folder = NULL;
  if (gtk_dialog_run (GTK_DIALOG (chooser)) == GTK_RESPONSE_ACCEPT)
    folder = gtk_file_chooser_get_filename (GTK_FILE_CHOOSER (chooser));
  gtk_widget_destroy (chooser);
  if (folder == NULL)
    return NULL;
  g_autoptr (GError) error = NULL;
  if (!ddim_plugin_check_model_folder (folder, &error))
    {
      g_autofree char *text = g_strdup_printf (_("“%s” is not a model folder the plug-in can "
                                                 "read (%s). Choose a diffusers UNet2DModel "
                                                 "folder or a PyTorch checkpoint folder."),
                                               folder, error->message);
      set_message (state, text);
      return NULL;
    }
  return g_steal_pointer (&folder);
}

static void
add_model_entry (DialogState *state, const char *folder)
{
  g_autofree char *name = ddim_plugin_model_label (folder);
  g_autofree char *label = g_strdup_printf ("%s (%s)", name, folder);
  /* Just above "Other folder…". */
  gtk_combo_box_text_insert (GTK_COMBO_BOX_TEXT (state->model_combo),
                             combo_count (state->model_combo) - 1, folder, label);
}

static void
on_model_changed (GtkComboBox *combo, DialogState *state)
{
  const char *id = gtk_combo_box_get_active_id (combo);
  if (id == NULL)
    return;
  if (g_strcmp0 (id, OTHER_FOLDER_ID) == 0)
    {
      g_autofree char *folder = choose_other_folder (state);
      if (folder != NULL && !combo_has_id (state->model_combo, folder))
        add_model_entry (state, folder);
      /* Re-enters this handler with a model id. */
      gtk_combo_box_set_active_id (combo, folder ? folder : state->current_model);
      return;
    }
  describe_active (combo);
  /* Back to the same model (a cancelled or refused "Other folder…"):
   * nothing changed, and its message stays. */
  if (g_strcmp0 (id, state->current_model) == 0)
    return;
  g_free (state->current_model);
  state->current_model = g_strdup (id);
  g_object_set (state->config, "model-folder", id, NULL);
  set_message (state, NULL);
  if (state->direction_combo != NULL)
    refresh_directions (state, id);
}

static GtkWidget *
add_row (GtkGrid *grid, int row, const char *mnemonic, const char *accessible_name,
         GtkWidget *widget)
{
  GtkWidget *label = gtk_label_new_with_mnemonic (mnemonic);
  gtk_label_set_xalign (GTK_LABEL (label), 0.0);
  gtk_label_set_mnemonic_widget (GTK_LABEL (label), widget);
  gtk_widget_set_hexpand (widget, TRUE);
  gtk_grid_attach (grid, label, 0, row, 1, 1);
  gtk_grid_attach (grid, widget, 1, row, 1, 1);
  atk_object_set_name (gtk_widget_get_accessible (widget), accessible_name);
  return label;
}

static GtkWidget *
make_choosers (DialogState *state, gboolean with_direction)
{
  GtkWidget *grid = gtk_grid_new ();
  gtk_grid_set_row_spacing (GTK_GRID (grid), 6);
  gtk_grid_set_column_spacing (GTK_GRID (grid), 6);

  state->model_combo = gtk_combo_box_text_new ();
  g_autoptr (GPtrArray) models = ddim_plugin_list_models ();
  for (guint i = 0; i < models->len; i++)
    {
      DdimModelEntry *entry = models->pdata[i];
      gtk_combo_box_text_append (GTK_COMBO_BOX_TEXT (state->model_combo), entry->folder,
                                 entry->label);
    }
  gtk_combo_box_text_append (GTK_COMBO_BOX_TEXT (state->model_combo), OTHER_FOLDER_ID,
                             _("Other folder…"));
  add_row (GTK_GRID (grid), 0, _("_Model"), _("Model"), state->model_combo);
  gtk_widget_set_tooltip_text (state->model_combo,
      _("The diffusion model: the one that comes with the plug-in, those in your model "
        "folders, or any other model folder"));

  if (with_direction)
    {
      state->direction_combo = gtk_combo_box_text_new ();
      add_row (GTK_GRID (grid), 1, _("_Direction"), _("Direction"), state->direction_combo);
      gtk_widget_set_tooltip_text (state->direction_combo,
          _("What the edit changes: the model's directions and the ones you made for it"));
      g_signal_connect (state->direction_combo, "changed", G_CALLBACK (on_direction_changed),
                        state);
    }

  state->message = gtk_label_new (NULL);
  gtk_label_set_line_wrap (GTK_LABEL (state->message), TRUE);
  gtk_label_set_max_width_chars (GTK_LABEL (state->message), 50);
  gtk_label_set_xalign (GTK_LABEL (state->message), 0.0);
  gtk_widget_set_no_show_all (state->message, TRUE);
  gtk_grid_attach (GTK_GRID (grid), state->message, 0, 2, 2, 1);

  /* The remembered model; a folder not in the list gets its own entry. */
  g_autofree char *folder = NULL;
  g_object_get (state->config, "model-folder", &folder, NULL);
  if (folder == NULL)
    folder = g_strdup ("");
  if (*folder != '\0' && !combo_has_id (state->model_combo, folder))
    {
      g_autofree char *canonical = g_canonicalize_filename (folder, NULL);
      if (combo_has_id (state->model_combo, canonical))
        {
          g_free (folder);
          folder = g_steal_pointer (&canonical);
        }
      else
        add_model_entry (state, folder);
    }
  g_signal_connect (state->model_combo, "changed", G_CALLBACK (on_model_changed), state);
  gtk_combo_box_set_active_id (GTK_COMBO_BOX (state->model_combo), folder);
  return grid;
}

gboolean
ddim_plugin_dialog_run (GimpProcedure *procedure, GimpProcedureConfig *config,
                        const DdimDialogSpec *spec, GimpDrawable *drawable)
{
  gimp_ui_init (DDIM_PLUGIN_BINARY);
  GtkWidget *dialog = gimp_procedure_dialog_new (procedure, config, _(spec->title));
  GimpProcedureDialog *pd = GIMP_PROCEDURE_DIALOG (dialog);
  DialogState state = { .config = config, .dialog = dialog };

  GtkWidget *content = gtk_dialog_get_content_area (GTK_DIALOG (dialog));
  GtkWidget *choosers = make_choosers (&state, spec->direction);
  gtk_box_pack_start (GTK_BOX (content), choosers, FALSE, FALSE, 0);
  gtk_widget_show_all (choosers);
  DdimDialogPreview *preview = NULL;
  gulong notify_id = 0;
  if (spec->preview && drawable != NULL)
    {
      preview = ddim_dialog_preview_new (config, drawable);
      gtk_box_pack_start (GTK_BOX (content), ddim_dialog_preview_get_widget (preview), FALSE,
                          FALSE, 0);
      notify_id = g_signal_connect_swapped (config, "notify",
                                            G_CALLBACK (ddim_dialog_preview_invalidate),
                                            preview);
    }

  if (spec->strength)
    {
      GtkWidget *scale = gimp_procedure_dialog_get_scale_entry (pd, "strength", 1.0);
      gimp_scale_entry_set_bounds (GIMP_SCALE_ENTRY (scale), -2.0, 2.0, FALSE);
    }

  g_autoptr (GList) shown = NULL;
  for (int i = 0; spec->main != NULL && spec->main[i] != NULL; i++)
    shown = g_list_append (shown, (gpointer) spec->main[i]);
  if (spec->advanced != NULL && spec->advanced[0] != NULL)
    {
      g_autoptr (GList) advanced = NULL;
      for (int i = 0; spec->advanced[i] != NULL; i++)
        advanced = g_list_append (advanced, (gpointer) spec->advanced[i]);
      gimp_procedure_dialog_fill_box_list (pd, "advanced-box", advanced);
      gimp_procedure_dialog_get_label (pd, "advanced-label", _("Advanced"), FALSE, FALSE);
      gimp_procedure_dialog_fill_expander (pd, "advanced", "advanced-label", FALSE,
                                           "advanced-box");
      shown = g_list_append (shown, (gpointer) "advanced");
    }
  if (shown != NULL)
    gimp_procedure_dialog_fill_list (pd, shown);

  gboolean ok = gimp_procedure_dialog_run (pd);
  if (preview != NULL)
    {
      g_signal_handler_disconnect (config, notify_id);
      ddim_dialog_preview_free (preview);
    }
  gtk_widget_destroy (dialog);
  g_free (state.current_model);
  return ok;
}
