/* The ddim-inversion GIMP plug-in: what its procedures share.
 *
 * This is the only code that includes libgimp. It translates between GIMP
 * (drawables, selections, parasites, progress, the PDB) and libddim; pixel
 * and latent arithmetic lives in libddim (ddim/pixels.h and the rest).
 *
 * Each procedure is one DdimProcedureInfo (proc-*.c); ddim-plugin.c
 * registers every entry of its table, so a new procedure is one new file
 * and one table line. */
#pragma once

#include <libgimp/gimp.h>
#include <gtk/gtk.h>
#include <glib/gi18n.h>

#include "ddim/ddim.h"
#include "ddim/pixels.h"

G_BEGIN_DECLS

#define DDIM_PLUGIN_BINARY "ddim-inversion"
#define DDIM_PARASITE_LATENT "ddim-inversion/latent"
#define DDIM_PARASITE_SOURCE "ddim-inversion/source"
#define DDIM_DEFAULT_MODEL_NAME "fashion-mnist-32"
#define DDIM_MENU_PATH "<Image>/Filters/Diffusion"
/* Smallest side of a layer (or selection) the plug-in works on; the
 * model's size factor when that is larger. */
#define DDIM_MIN_SIDE 4
/* Largest side in native mode (the latent goes into a parasite and the
 * model runs at that size). */
#define DDIM_MAX_NATIVE_SIDE 2048

typedef struct {
  const char *name;         /* PDB name */
  const char *menu_label;   /* N_() */
  const char *blurb;        /* N_() */
  const char *help;         /* N_() */
  const char *icon;         /* file name in the plug-in's icons/ folder */
  gboolean    several_layers; /* works on one or more selected layers */
  void      (*add_arguments) (GimpProcedure *procedure);
  GimpRunImageFunc run;
} DdimProcedureInfo;

extern const DdimProcedureInfo ddim_invert_procedure;
extern const DdimProcedureInfo ddim_reconstruct_procedure;
extern const DdimProcedureInfo ddim_semantic_edit_procedure;
extern const DdimProcedureInfo ddim_interpolate_procedure;
extern const DdimProcedureInfo ddim_discover_procedure;
extern const DdimProcedureInfo ddim_fit_procedure;

/* Semantic edit's result choice ids. */
typedef enum {
  DDIM_EDIT_RESULT_DETAIL,   /* original + upsample (edited - reconstructed) */
  DDIM_EDIT_RESULT_MODEL     /* the edited image, resized to the region */
} DdimEditResult;

/* Resize choice ids. */
typedef enum {
  DDIM_RESIZE_MODE_FIT,
  DDIM_RESIZE_MODE_NATIVE
} DdimResizeMode;

/* Where a latent came from: kept in the DDIM_PARASITE_SOURCE parasite
 * (GKeyFile text) beside the latent. */
typedef struct {
  char  *name;                  /* the source layer's name */
  int    x, y, width, height;   /* the inverted region, image coordinates */
  guint  tattoo;                /* the source layer's tattoo */
  char  *model_folder;          /* absolute */
  char  *checksum;              /* of the region's pixels (ddim_plugin_pixels_checksum);
                                 * NULL when unknown */
} DdimSourceInfo;

void            ddim_source_info_free (DdimSourceInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimSourceInfo, ddim_source_info_free)

/* Common arguments: "model-folder"; "steps", "method" and "resize" (the
 * settings of an inversion), with the procedure's own default method and
 * steps (see DDIM_PLUGIN_*_DEFAULT). */
void            ddim_plugin_add_model_argument (GimpProcedure *procedure);
void            ddim_plugin_add_inversion_arguments (GimpProcedure *procedure,
                                                     DdimInversionMethod default_method,
                                                     int default_steps);

/* Defaults chosen from the 500-image comparison of the default model
 * (README, "Inversion methods"). Invert to latent: BDIA, exact to float32
 * round-off at one model evaluation per step, so 20 steps suffice for the
 * round trip. Semantic edit and Interpolate decode with plain DDIM, so
 * their own inversions are plain DDIM at 50 steps, the setting their
 * measurements used. */
#define DDIM_PLUGIN_INVERT_METHOD_DEFAULT DDIM_METHOD_BDIA
#define DDIM_PLUGIN_INVERT_STEPS_DEFAULT  20
#define DDIM_PLUGIN_DECODE_METHOD_DEFAULT DDIM_METHOD_DDIM
#define DDIM_PLUGIN_DECODE_STEPS_DEFAULT  50
/* Semantic edit's "result" (a choice nick). */
#define DDIM_PLUGIN_EDIT_RESULT_DEFAULT   "model"

/* An EXECUTION_ERROR return with @error (taken). */
GimpValueArray *ddim_plugin_fail (GimpProcedure *procedure, GError *error);
/* Sets a GIMP_PLUG_IN_ERROR. */
void            ddim_plugin_set_error (GError **error, const char *format, ...) G_GNUC_PRINTF (2, 3);

/* What a procedure's dialog shows (dialog.c): a Model drop-down (argument
 * "model-folder"), with @direction a Direction drop-down that follows it
 * ("direction"), with @strength "strength" as a -2..2 slider; then the
 * arguments in @main, then those in @advanced in a collapsed "Advanced"
 * section (both NULL-terminated; may be NULL). */
typedef struct {
  const char        *title;
  gboolean           direction;
  gboolean           strength;
  gboolean           preview;   /* Semantic edit's preview of the drawable */
  const char *const *main;
  const char *const *advanced;
} DdimDialogSpec;

/* Shows the procedure's dialog (interactive runs). FALSE: cancelled. */
gboolean        ddim_plugin_dialog_run (GimpProcedure *procedure, GimpProcedureConfig *config,
                                        const DdimDialogSpec *spec, GimpDrawable *drawable);

/* Semantic edit's preview (preview.c): the edit of @drawable's region at
 * the model's size, from @config's arguments; live when an edit is
 * estimated under a second, else behind a Preview button. */
typedef struct _DdimDialogPreview DdimDialogPreview;
DdimDialogPreview *ddim_dialog_preview_new (GimpProcedureConfig *config,
                                            GimpDrawable *drawable);
GtkWidget      *ddim_dialog_preview_get_widget (DdimDialogPreview *preview);
/* The arguments changed: recompute soon (live) or say it is stale. */
void            ddim_dialog_preview_invalidate (DdimDialogPreview *preview);
void            ddim_dialog_preview_free (DdimDialogPreview *preview);

/* Semantic edit's direction argument resolved for @model (borrowed from
 * the returned set). */
DdimDirectionSet *ddim_plugin_resolve_direction (const char *arg, DdimModel *model,
                                                 DdimDirection **out, GError **error);

/* The single layer the procedure works on: exactly one drawable, a layer
 * that is not a group, in an image that is not indexed. */
GimpLayer      *ddim_plugin_get_layer (GimpImage *image, GimpDrawable **drawables,
                                       GError **error);

/* The embedded model's folder: $DDIM_DEFAULT_MODEL when set, else
 * <plug-in folder>/models/fashion-mnist-32. */
char           *ddim_plugin_default_model_folder (void);
/* Loads @folder (NULL or "": the embedded model). Errors say what to do;
 * @used_folder (optional) receives the absolute folder. */
DdimModel      *ddim_plugin_load_model (const char *folder, char **used_folder, GError **error);

/* ---- Models and directions (models.c). */

/* A model the dialogs offer: @folder is the "model-folder" argument's value
 * ("" for the embedded model, else an absolute folder). */
typedef struct {
  char *folder;
  char *label;    /* readable: the model card's title, else the folder's name */
} DdimModelEntry;

void            ddim_model_entry_free (DdimModelEntry *entry);
/* The embedded model first, then every folder the library can read under
 * $XDG_DATA_HOME/ddim-inversion/models/ and the GIMP profile's
 * ddim-inversion/models/ (DdimModelEntry, sorted by folder name). */
GPtrArray      *ddim_plugin_list_models (void);
/* Whether the library can read the model in @folder (its configuration;
 * the weights are read when it is used). */
gboolean        ddim_plugin_check_model_folder (const char *folder, GError **error);
/* A readable name for the model in @folder (g_free). */
char           *ddim_plugin_model_label (const char *folder);
/* $XDG_DATA_HOME/ddim-inversion/models (g_free). */
char           *ddim_plugin_user_models_dir (void);
/* The user's own directions for the model whose weights have
 * @weights_sha256: $XDG_DATA_HOME/ddim-inversion/directions/<sha>.safetensors
 * (g_free). */
char           *ddim_plugin_user_directions_path (const char *weights_sha256);
/* The directions of a model: those of @model_folder's directions file,
 * then the user's for @weights_sha256 (NULL: none) whose names the
 * model's file does not use. An empty set when there are none. */
DdimDirectionSet *ddim_plugin_load_directions (const char *model_folder,
                                               const char *weights_sha256, GError **error);
/* Adds @added (copies; same names replaced) to the user's directions for
 * @weights_sha256. */
gboolean        ddim_plugin_save_user_directions (const char *weights_sha256,
                                                  DdimDirectionSet *added, GError **error);
/* The raw strength that the plug-in's strength 1.0 means for @direction:
 * its recommended strength (the top of its range; else what its range or
 * sigma gives; else 1). */
double          ddim_plugin_direction_unit (const DdimDirection *direction);
/* "name — description" (g_free). */
char           *ddim_plugin_direction_label (const DdimDirection *direction);

/* Progress: @title at first, then @step_format (two %d: step, steps), as
 * in "Inverting: step 12/50". */
typedef struct {
  const char *step_format;
  int         offset;   /* added to each step count ... */
  int         total;    /* ... shown out of this total, when > 0 */
  const char *estimate; /* "about 40 s in all": shown after the steps when set
                         * (borrowed) */
} DdimProgress;
void            ddim_plugin_progress_start (DdimProgress *progress, const char *title,
                                            const char *step_format);
void            ddim_plugin_progress_cb (int done, int total, gpointer progress);

/* RGBA floats (4 per pixel, 0..1, the image's own gamma-encoded space) of
 * the @width x @height rectangle at (@x, @y) in drawable coordinates. Gray
 * drawables give R = G = B = Y'. */
float          *ddim_plugin_read_rgba (GimpDrawable *drawable, int x, int y, int width,
                                       int height);
/* The selection's coverage (W*H, 0..1) of a rectangle in image
 * coordinates, or NULL when nothing is selected. */
float          *ddim_plugin_read_selection (GimpImage *image, int x, int y, int width,
                                            int height);
/* The alpha of a whole drawable, resized to @width x @height. */
float          *ddim_plugin_read_alpha (GimpDrawable *drawable, int width, int height);

/* A new layer (not yet inserted) of @width x @height holding @rgba: RGBA
 * for RGB images, GRAYA (luminance) for gray ones. */
GimpLayer      *ddim_plugin_new_layer (GimpImage *image, const char *name, int width,
                                       int height, const float *rgba);
/* Inserts @layer just above @above (in its group). */
void            ddim_plugin_insert_above (GimpImage *image, GimpLayer *layer, GimpLayer *above);
/* Inserts @layer into @parent (NULL: the image's top level) at @position. */
void            ddim_plugin_insert (GimpImage *image, GimpLayer *layer, GimpLayer *parent,
                                    int position);

/* A parasite to attach to a result layer; @data is borrowed. */
typedef struct {
  const char *name;
  GBytes     *data;
} DdimPluginParasite;

/* How a procedure that adds one layer ends: in one undo group, a new layer
 * @name (@width x @height of @rgba, as ddim_plugin_new_layer) at image
 * offsets (@x, @y) just above @above, with @n_parasites parasites (when
 * GIMP refuses one, the layer is removed again). Ends the progress and
 * returns the success values with the layer as value 1, or the
 * EXECUTION_ERROR. */
GimpValueArray *ddim_plugin_finish_with_layer (GimpProcedure *procedure, GimpImage *image,
                                               GimpLayer *above, const char *name, int x, int y,
                                               int width, int height, const float *rgba,
                                               const DdimPluginParasite *parasites,
                                               int n_parasites);

/* Persistent, undoable parasites. */
gboolean        ddim_plugin_attach (GimpItem *item, const char *name, GBytes *data,
                                    GError **error);
/* NULL when @item has no such parasite. */
GBytes         *ddim_plugin_get_parasite (GimpItem *item, const char *name);

GBytes         *ddim_source_info_to_bytes (const DdimSourceInfo *info);
/* NULL (and a message on stderr) when @bytes cannot be read. */
DdimSourceInfo *ddim_source_info_new_from_bytes (GBytes *bytes);
/* The source parasite of @item, NULL when it has none (or a bad one). */
DdimSourceInfo *ddim_source_info_get (GimpItem *item);

/* ---- Inversion shared by Invert to latent, Semantic edit and Interpolate
 * latents (latents.c). */

/* What makes a latent: the model (borrowed), steps, method, resize. */
typedef struct {
  DdimModel          *model;
  int                 steps;
  DdimInversionMethod method;
  gboolean            native;
} DdimInvertSettings;

/* The part of @layer the procedure works on, in layer coordinates: the
 * selection's bounds within the layer (@use_selection), else the whole
 * layer. Error when the selection does not overlap the layer. @partial
 * (optional): whether that is less than the whole layer. */
gboolean        ddim_plugin_get_region (GimpLayer *layer, gboolean use_selection, int *x, int *y,
                                        int *width, int *height, gboolean *partial,
                                        GError **error);
/* Checks steps against the model and a @width x @height region (of layer
 * @name) against the model's smallest side and, native, the largest; then
 * gives the size the model runs at (@mw x @mh): its sample_size (fit) or
 * the region padded to the size factor (native). */
gboolean        ddim_plugin_check_settings (const DdimInvertSettings *settings,
                                            const char *name, int width, int height,
                                            gboolean partial, int *mw, int *mh,
                                            GError **error);
/* The model input [C, mh, mw] for RGBA pixels of @width x @height. */
float          *ddim_plugin_model_input (const DdimInvertSettings *settings, const float *rgba,
                                         int width, int height, int mw, int mh);
/* Inverts @x0 [C, mh, mw] with progress "Inverting: step i/N"; the latent
 * records the model's hash, @width x @height as the image size and the
 * resize mode. */
DdimLatent     *ddim_plugin_invert (const DdimInvertSettings *settings, const float *x0, int mw,
                                    int mh, int width, int height, GError **error);
/* SHA-256 of RGBA pixels (g_free). */
char           *ddim_plugin_pixels_checksum (const float *rgba, int width, int height);
/* A latent of @source's region (@x, @y, @width x @height in image
 * coordinates) whose pixels had @checksum, made with @settings: searched
 * first on @first (when not NULL), then on every layer of @image, among the
 * layers made by Invert to latent (both parasites). NULL when there is
 * none. @found (optional) receives the layer it was on. */
DdimLatent     *ddim_plugin_find_latent (GimpImage *image, GimpLayer *first, GimpLayer *source,
                                         int x, int y, int width, int height,
                                         const char *checksum,
                                         const DdimInvertSettings *settings,
                                         GimpLayer **found);
/* Whether @latent was made with @settings at model size @mw x @mh from a
 * @width x @height image. */
gboolean        ddim_plugin_latent_matches (const DdimLatent *latent,
                                            const DdimInvertSettings *settings, int mw, int mh,
                                            int width, int height);
/* The text for a latent's settings, "10 steps, DDIM, fit" (g_free). */
char           *ddim_plugin_latent_describe (const DdimLatent *latent);

/* ---- Showing directions (proc-discover.c). */

/* Three edits of @latent along @direction, at −1, 0 and +1 times its
 * recommended strength (@plain: the latent sampled without edit), each
 * brought to @rw x @rh (cropped when @native) with @alpha, side by side
 * into @strip (RGBA, 3 @rw x @rh). */
gboolean        ddim_plugin_edit_strip (DdimModel *model, const DdimLatent *latent,
                                        DdimDirection *direction, const float *plain, int rw,
                                        int rh, gboolean native, const float *alpha,
                                        float *strip, GError **error);
/* Adds a layer group @group_name above @layer holding one such strip per
 * direction of @directions, the first at image offsets (@x, @y), the next
 * ones below it; ends the progress and returns the success values with the
 * group, or NULL and @error. */
GimpValueArray *ddim_plugin_show_directions (GimpProcedure *procedure, GimpImage *image,
                                             GimpLayer *layer, DdimModel *model,
                                             const DdimLatent *latent,
                                             DdimDirectionSet *directions, int x, int y,
                                             int rw, int rh, gboolean native,
                                             const float *alpha, const char *group_name,
                                             GError **error);

/* ---- Run-time estimates (estimate.c, ddim/cost.h). */

/* An interactive native-size run estimated above this asks first. */
#define DDIM_PLUGIN_LONG_RUN_SECONDS 180.0

/* Model evaluations per step of an inversion method. */
int             ddim_plugin_method_evaluations (DdimInversionMethod method);
/* Seconds for @evaluations passes at @mw x @mh; negative when unknown. */
double          ddim_plugin_estimate_seconds (DdimModel *model, int mw, int mh,
                                              int evaluations);
/* "40 s", "12 min" (g_free). */
char           *ddim_plugin_format_seconds (double seconds);
/* Before an interactive native-size run of @evaluations model passes on a
 * @width x @height region that is estimated above
 * DDIM_PLUGIN_LONG_RUN_SECONDS: says so and offers fit mode (then
 * settings->native becomes FALSE). FALSE with *@cancelled when the user
 * cancels. Other runs: TRUE at once. */
gboolean        ddim_plugin_confirm_long_run (GimpRunMode run_mode,
                                              DdimInvertSettings *settings, const char *name,
                                              int width, int height, int evaluations,
                                              gboolean *cancelled);

G_END_DECLS
