/* The models the plug-in offers and their directions: the embedded model,
 * the folders under the user's model folders, and for each model the
 * directions of its own file beside those the user made for it (kept per
 * weights SHA-256, so they follow the weights, not the folder). */
#include "ddim-plugin.h"

#include <errno.h>
#include <string.h>

void
ddim_model_entry_free (DdimModelEntry *entry)
{
  if (entry == NULL)
    return;
  g_free (entry->folder);
  g_free (entry->label);
  g_free (entry);
}

char *
ddim_plugin_user_models_dir (void)
{
  return g_build_filename (g_get_user_data_dir (), "ddim-inversion", "models", NULL);
}

char *
ddim_plugin_user_directions_path (const char *weights_sha256)
{
  g_return_val_if_fail (weights_sha256 != NULL && *weights_sha256 != '\0', NULL);
  g_autofree char *file = g_strconcat (weights_sha256, ".safetensors", NULL);
  return g_build_filename (g_get_user_data_dir (), "ddim-inversion", "directions", file, NULL);
}

/* The first "# " heading of the folder's model card (MODEL.md, README.md),
 * up to a colon; NULL when there is none. */
static char *
model_card_title (const char *folder)
{
  static const char *const cards[] = { "MODEL.md", "README.md" };
  for (guint i = 0; i < G_N_ELEMENTS (cards); i++)
    {
      g_autofree char *path = g_build_filename (folder, cards[i], NULL);
      g_autofree char *text = NULL;
      gsize length = 0;
      if (!g_file_get_contents (path, &text, &length, NULL) || !g_utf8_validate (text, length, NULL))
        continue;
      g_auto (GStrv) lines = g_strsplit (text, "\n", 40);
      for (int j = 0; lines[j] != NULL; j++)
        {
          /* A YAML front matter (Hugging Face cards) is skipped line by line. */
          if (!g_str_has_prefix (lines[j], "# "))
            continue;
          g_autofree char *title = g_strstrip (g_strdup (lines[j] + 2));
          char *colon = strchr (title, ':');
          if (colon != NULL && colon != title)
            *colon = '\0';
          g_strstrip (title);
          if (*title != '\0')
            return g_steal_pointer (&title);
        }
    }
  return NULL;
}

gboolean
ddim_plugin_check_model_folder (const char *folder, GError **error)
{
  /* Any family the library reads (diffusers, ermongroup, guided-diffusion):
   * the architecture and schedule parse; the weights are read on use. */
  DdimUNetConfig config;
  return ddim_model_load_config (folder, &config, NULL, NULL, error);
}

char *
ddim_plugin_model_label (const char *folder)
{
  g_autofree char *title = model_card_title (folder);
  if (title != NULL)
    return g_steal_pointer (&title);
  return g_path_get_basename (folder);
}

/* Adds the model folders directly under @dir, sorted by name. */
static void
add_models_under (GPtrArray *models, const char *dir, GHashTable *seen)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  if (d == NULL)
    return;
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort_values (names, (GCompareFunc) g_strcmp0);
  for (guint i = 0; i < names->len; i++)
    {
      g_autofree char *path = g_build_filename (dir, names->pdata[i], NULL);
      g_autofree char *canonical = g_canonicalize_filename (path, NULL);
      if (g_hash_table_contains (seen, canonical) || !g_file_test (canonical, G_FILE_TEST_IS_DIR))
        continue;
      /* A folder counts when the library can read its architecture: any
       * family (diffusers, PyTorch checkpoints); weights are read later. */
      if (!ddim_plugin_check_model_folder (canonical, NULL))
        continue;
      DdimModelEntry *entry = g_new0 (DdimModelEntry, 1);
      entry->folder = g_strdup (canonical);
      entry->label = ddim_plugin_model_label (canonical);
      g_hash_table_add (seen, g_steal_pointer (&canonical));
      g_ptr_array_add (models, entry);
    }
}

GPtrArray *
ddim_plugin_list_models (void)
{
  GPtrArray *models = g_ptr_array_new_with_free_func ((GDestroyNotify) ddim_model_entry_free);
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);

  g_autofree char *embedded = ddim_plugin_default_model_folder ();
  DdimModelEntry *entry = g_new0 (DdimModelEntry, 1);
  entry->folder = g_strdup ("");
  g_autofree char *title = g_file_test (embedded, G_FILE_TEST_IS_DIR)
                               ? ddim_plugin_model_label (embedded) : NULL;
  entry->label = g_strdup_printf (_("%s (comes with the plug-in)"),
                                  title ? title : DDIM_DEFAULT_MODEL_NAME);
  g_ptr_array_add (models, entry);
  g_hash_table_add (seen, g_steal_pointer (&embedded));

  g_autofree char *user = ddim_plugin_user_models_dir ();
  add_models_under (models, user, seen);
  g_autofree char *profile = g_build_filename (gimp_directory (), "ddim-inversion", "models",
                                               NULL);
  add_models_under (models, profile, seen);
  return models;
}

DdimDirectionSet *
ddim_plugin_load_directions (const char *model_folder, const char *weights_sha256,
                             GError **error)
{
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  g_autofree char *own = g_build_filename (model_folder, DDIM_DIRECTIONS_FILE, NULL);
  g_autoptr (GError) sub = NULL;
  if (g_file_test (own, G_FILE_TEST_EXISTS))
    {
      g_autoptr (DdimDirectionSet) loaded = ddim_direction_set_load (own, &sub);
      if (loaded == NULL)
        {
          ddim_plugin_set_error (error, _("The directions file “%s” cannot be read: %s."), own,
                                 sub->message);
          return NULL;
        }
      ddim_direction_set_merge (set, loaded);
    }
  if (weights_sha256 == NULL || *weights_sha256 == '\0')
    return g_steal_pointer (&set);
  g_autofree char *user = ddim_plugin_user_directions_path (weights_sha256);
  if (g_file_test (user, G_FILE_TEST_EXISTS))
    {
      g_autoptr (DdimDirectionSet) loaded = ddim_direction_set_load (user, &sub);
      if (loaded == NULL)
        {
          ddim_plugin_set_error (error, _("Your directions file for this model, “%s”, cannot be "
                                          "read: %s. Move it away and make the directions "
                                          "again."), user, sub->message);
          return NULL;
        }
      /* The model's own directions keep their names. */
      for (guint i = 0; i < ddim_direction_set_get_n (loaded); i++)
        {
          DdimDirection *d = ddim_direction_set_get_nth (loaded, i);
          if (ddim_direction_set_lookup (set, d->name, NULL) == NULL)
            ddim_direction_set_add (set, ddim_direction_copy (d));
        }
    }
  return g_steal_pointer (&set);
}

gboolean
ddim_plugin_save_user_directions (const char *weights_sha256, DdimDirectionSet *added,
                                  GError **error)
{
  g_autofree char *path = ddim_plugin_user_directions_path (weights_sha256);
  g_autofree char *dir = g_path_get_dirname (path);
  if (g_mkdir_with_parents (dir, 0755) != 0)
    {
      ddim_plugin_set_error (error, _("Cannot make the folder “%s” for your directions: %s."),
                             dir, g_strerror (errno));
      return FALSE;
    }
  g_autoptr (GError) sub = NULL;
  g_autoptr (DdimDirectionSet) set = NULL;
  if (g_file_test (path, G_FILE_TEST_EXISTS))
    {
      set = ddim_direction_set_load (path, &sub);
      if (set == NULL)
        {
          ddim_plugin_set_error (error, _("Your directions file for this model, “%s”, cannot "
                                          "be read: %s. Move it away and try again."), path,
                                 sub->message);
          return FALSE;
        }
    }
  else
    set = ddim_direction_set_new ();
  /* Same names are replaced: making a direction again updates it. */
  ddim_direction_set_merge (set, added);
  if (!ddim_direction_set_save (set, path, &sub))
    {
      ddim_plugin_set_error (error, _("Cannot save your directions to “%s”: %s."), path,
                             sub->message);
      return FALSE;
    }
  return TRUE;
}

double
ddim_plugin_direction_unit (const DdimDirection *direction)
{
  if (direction->strength_max > 0)
    return direction->strength_max;
  if (direction->strength_min < 0)
    return -direction->strength_min;
  if (direction->sigma > 0)
    return 2 * direction->sigma;
  return 1.0;
}

char *
ddim_plugin_direction_label (const DdimDirection *direction)
{
  if (direction->description != NULL && *direction->description != '\0'
      && g_strcmp0 (direction->description, direction->name) != 0)
    return g_strdup_printf ("%s — %s", direction->name, direction->description);
  return g_strdup (direction->name);
}
