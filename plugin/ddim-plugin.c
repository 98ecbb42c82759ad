/* The ddim-inversion plug-in: one GimpPlugIn registering every procedure
 * in `procedures` below (the procedures live in proc-*.c). */
#include "ddim-plugin.h"

#include <libgimp/gimpui.h>

#define DDIM_TYPE_PLUGIN (ddim_plugin_get_type ())
G_DECLARE_FINAL_TYPE (DdimPlugin, ddim_plugin, DDIM, PLUGIN, GimpPlugIn)

struct _DdimPlugin
{
  GimpPlugIn parent_instance;
};

G_DEFINE_TYPE (DdimPlugin, ddim_plugin, GIMP_TYPE_PLUG_IN)

static const DdimProcedureInfo *const procedures[] = {
  &ddim_invert_procedure,
  &ddim_reconstruct_procedure,
  &ddim_semantic_edit_procedure,
  &ddim_interpolate_procedure,
  &ddim_discover_procedure,
  &ddim_fit_procedure,
};

static const DdimProcedureInfo *
find_procedure (const char *name)
{
  for (guint i = 0; i < G_N_ELEMENTS (procedures); i++)
    if (g_strcmp0 (procedures[i]->name, name) == 0)
      return procedures[i];
  return NULL;
}

static GList *
ddim_plugin_query_procedures (GimpPlugIn *plug_in)
{
  (void) plug_in;
  GList *list = NULL;
  for (guint i = 0; i < G_N_ELEMENTS (procedures); i++)
    list = g_list_append (list, g_strdup (procedures[i]->name));
  return list;
}

static GimpProcedure *
ddim_plugin_create_procedure (GimpPlugIn *plug_in, const char *name)
{
  const DdimProcedureInfo *info = find_procedure (name);
  if (info == NULL)
    return NULL;

  GimpProcedure *procedure = gimp_image_procedure_new (plug_in, info->name,
                                                       GIMP_PDB_PROC_TYPE_PLUGIN, info->run,
                                                       (gpointer) info, NULL);
  gimp_procedure_set_image_types (procedure, "RGB*, GRAY*");
  gimp_procedure_set_sensitivity_mask (procedure, info->several_layers
      ? GIMP_PROCEDURE_SENSITIVE_DRAWABLE | GIMP_PROCEDURE_SENSITIVE_DRAWABLES
      : GIMP_PROCEDURE_SENSITIVE_DRAWABLE);
  /* The label first: add_menu_path needs it. */
  gimp_procedure_set_menu_label (procedure, _(info->menu_label));
  gimp_procedure_add_menu_path (procedure, DDIM_MENU_PATH);
  gimp_procedure_set_documentation (procedure, _(info->blurb), _(info->help), info->name);
  gimp_procedure_set_attribution (procedure, "The ddim-inversion authors",
                                  "The ddim-inversion authors", "2025");

  g_autofree char *dir = g_path_get_dirname (gimp_get_progname ());
  g_autofree char *icon = g_build_filename (dir, "icons", info->icon, NULL);
  if (g_file_test (icon, G_FILE_TEST_IS_REGULAR))
    {
      g_autoptr (GFile) file = g_file_new_for_path (icon);
      gimp_procedure_set_icon_file (procedure, file);
    }

  info->add_arguments (procedure);
  return procedure;
}

static void
ddim_plugin_class_init (DdimPluginClass *klass)
{
  GimpPlugInClass *plug_in_class = GIMP_PLUG_IN_CLASS (klass);
  plug_in_class->query_procedures = ddim_plugin_query_procedures;
  plug_in_class->create_procedure = ddim_plugin_create_procedure;
  /* set_i18n: the default (domain "ddim-inversion", catalogs in the
   * plug-in folder's locale/). */
}

static void
ddim_plugin_init (DdimPlugin *self)
{
  (void) self;
}

GIMP_MAIN (DDIM_TYPE_PLUGIN)
