/* Directions, direction sets and their safetensors file (see
 * ddim/directions.h). */
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ddim/directions.h"
#include "ddim/error.h"
#include "ddim/safetensors.h"

#define TENSOR_PREFIX "direction."

struct _DdimDirectionSet {
  GPtrArray *items;   /* DdimDirection, owned */
};

/* A zeroed direction of @n_timesteps blocks (0: a single one). */
static DdimDirection *
direction_new (const char *name, DdimDirectionSpace space, int ndim, int channels, int height,
               int width, int n_timesteps, const int *timesteps)
{
  g_return_val_if_fail (name != NULL && channels > 0, NULL);
  g_return_val_if_fail (ndim == 1 || ndim == 3, NULL);
  g_return_val_if_fail (ndim == 1 || (height > 0 && width > 0), NULL);
  DdimDirection *d = g_new0 (DdimDirection, 1);
  d->name = g_strdup (name);
  d->description = g_strdup ("");
  d->kind = DDIM_DIRECTION_SUPERVISED;
  d->space = space;
  d->ndim = ndim;
  d->channels = channels;
  d->height = ndim == 3 ? height : 0;
  d->width = ndim == 3 ? width : 0;
  d->n_timesteps = n_timesteps;
  d->timesteps = n_timesteps > 0 ? g_memdup2 (timesteps, (gsize) n_timesteps * sizeof (int))
                                 : NULL;
  d->data = g_new0 (float, ddim_direction_get_n_elements (d));
  d->t_min = d->t_max = -1;
  d->model_sha256 = g_strdup ("");
  d->method = g_strdup ("");
  return d;
}

DdimDirection *
ddim_direction_new (const char *name, DdimDirectionSpace space, int ndim, int channels,
                    int height, int width)
{
  return direction_new (name, space, ndim, channels, height, width, 0, NULL);
}

DdimDirection *
ddim_direction_new_per_timestep (const char *name, int ndim, int channels, int height,
                                 int width, int n_timesteps, const int *timesteps)
{
  g_return_val_if_fail (n_timesteps >= 2 && timesteps != NULL, NULL);
  for (int i = 1; i < n_timesteps; i++)
    g_return_val_if_fail (timesteps[i] < timesteps[i - 1], NULL);
  return direction_new (name, DDIM_SPACE_H, ndim, channels, height, width, n_timesteps,
                        timesteps);
}

gsize
ddim_direction_get_block_elements (const DdimDirection *d)
{
  return d->ndim == 1 ? (gsize) d->channels : (gsize) d->channels * d->height * d->width;
}

gsize
ddim_direction_get_n_elements (const DdimDirection *d)
{
  return ddim_direction_get_block_elements (d) * MAX (1, d->n_timesteps);
}

DdimDirection *
ddim_direction_copy (const DdimDirection *d)
{
  g_return_val_if_fail (d != NULL, NULL);
  DdimDirection *c = g_new (DdimDirection, 1);
  *c = *d;
  c->name = g_strdup (d->name);
  c->description = g_strdup (d->description);
  c->model_sha256 = g_strdup (d->model_sha256);
  c->method = g_strdup (d->method);
  c->data = g_memdup2 (d->data, ddim_direction_get_n_elements (d) * sizeof (float));
  c->timesteps = d->n_timesteps > 0
                     ? g_memdup2 (d->timesteps, (gsize) d->n_timesteps * sizeof (int))
                     : NULL;
  return c;
}

void
ddim_direction_free (DdimDirection *d)
{
  if (d == NULL)
    return;
  g_free (d->name);
  g_free (d->description);
  g_free (d->model_sha256);
  g_free (d->method);
  g_free (d->data);
  g_free (d->timesteps);
  g_free (d);
}

char *
ddim_direction_shape_string (const DdimDirection *d)
{
  g_autofree char *block = d->ndim == 1
                               ? g_strdup_printf ("[%d]", d->channels)
                               : g_strdup_printf ("[%d, %d, %d]", d->channels, d->height,
                                                  d->width);
  if (d->n_timesteps == 0)
    return g_steal_pointer (&block);
  return g_strdup_printf ("%s at %d timesteps", block, d->n_timesteps);
}

const char *
ddim_direction_kind_to_string (DdimDirectionKind kind)
{
  switch (kind)
    {
    case DDIM_DIRECTION_UNSUPERVISED:
      return "unsupervised";
    case DDIM_DIRECTION_PCA:
      return "pca";
    case DDIM_DIRECTION_SUPERVISED:
    default:
      return "supervised";
    }
}

gboolean
ddim_direction_kind_from_string (const char *s, DdimDirectionKind *kind, GError **error)
{
  static const DdimDirectionKind all[] = { DDIM_DIRECTION_SUPERVISED,
                                           DDIM_DIRECTION_UNSUPERVISED, DDIM_DIRECTION_PCA };
  for (gsize i = 0; i < G_N_ELEMENTS (all); i++)
    if (g_strcmp0 (s, ddim_direction_kind_to_string (all[i])) == 0)
      {
        *kind = all[i];
        return TRUE;
      }
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
               "direction kind '%s' is not one of supervised, unsupervised, pca",
               s ? s : "(null)");
  return FALSE;
}

const char *
ddim_direction_space_to_string (DdimDirectionSpace space)
{
  return space == DDIM_SPACE_X ? "x" : "h";
}

gboolean
ddim_direction_space_from_string (const char *s, DdimDirectionSpace *space, GError **error)
{
  if (g_strcmp0 (s, "h") == 0)
    *space = DDIM_SPACE_H;
  else if (g_strcmp0 (s, "x") == 0)
    *space = DDIM_SPACE_X;
  else
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "direction space '%s' is not one of h, x", s ? s : "(null)");
      return FALSE;
    }
  return TRUE;
}

gboolean
ddim_direction_name_is_valid (const char *name, GError **error)
{
  gboolean ok = name != NULL && name[0] != '\0' && strlen (name) <= 200
                && g_utf8_validate (name, -1, NULL);
  for (const char *p = name; ok && *p; p = g_utf8_next_char (p))
    {
      gunichar ch = g_utf8_get_char (p);
      if (g_unichar_iscntrl (ch) || g_unichar_isspace (ch))
        ok = FALSE;
    }
  if (!ok)
    g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                 "'%s' is not a valid direction name (1 to 200 bytes of UTF-8 without "
                 "spaces or control characters)", name ? name : "(null)");
  return ok;
}

gboolean
ddim_direction_check_strength (double strength, GError **error)
{
  if (!isfinite (strength))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the edit strength must be a finite number, not %g", strength);
      return FALSE;
    }
  return TRUE;
}

gboolean
ddim_direction_check (const DdimDirection *d, DdimUNet *unet, const char *model_sha256,
                      int height, int width, GError **error)
{
  g_return_val_if_fail (d != NULL && unet != NULL, FALSE);
  if (!ddim_unet_check_size (unet, height, width, error))
    return FALSE;
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  g_autofree char *have = ddim_direction_shape_string (d);
  g_autofree char *want = NULL;
  gboolean fits;
  if (d->space == DDIM_SPACE_X)
    {
      fits = d->ndim == 3 && d->channels == c->in_channels && d->height == height
             && d->width == width;
      want = g_strdup_printf ("[%d, %d, %d]", c->in_channels, height, width);
      if (!fits)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                       "direction '%s' (x-space) has shape %s, but this model's input at "
                       "%dx%d is %s; it was made for another model or image size",
                       d->name, have, width, height, want);
          return FALSE;
        }
    }
  else
    {
      int hc, hh, hw;
      ddim_unet_hspace_shape (unet, height, width, &hc, &hh, &hw);
      if (d->ndim == 1)
        {
          fits = d->channels == hc;
          want = g_strdup_printf ("[%d] (pooled; full shape [%d, %d, %d])", hc, hc, hh, hw);
        }
      else
        {
          fits = d->channels == hc && d->height == hh && d->width == hw;
          want = g_strdup_printf ("[%d, %d, %d]", hc, hh, hw);
        }
      if (!fits)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                       "direction '%s' has shape %s, but this model's h-space at %dx%d is "
                       "%s; it was made for another model or image size",
                       d->name, have, width, height, want);
          return FALSE;
        }
    }
  if (model_sha256 && model_sha256[0] && d->model_sha256 && d->model_sha256[0]
      && g_ascii_strcasecmp (model_sha256, d->model_sha256) != 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "direction '%s' was made for another model (weights SHA-256 %.12s…; this "
                   "model's is %.12s…)", d->name, d->model_sha256, model_sha256);
      return FALSE;
    }
  return TRUE;
}

/* The block at timestep @t of a per-timestep direction, interpolated:
 * writes the weights of blocks @i and @i + 1 (@i + 1 unused when @wb = 0). */
static void
block_weights (const DdimDirection *d, int t, int *i, double *wa, double *wb)
{
  const int *ts = d->timesteps;
  int n = d->n_timesteps;
  *i = 0;
  *wa = 1;
  *wb = 0;
  if (t >= ts[0])
    return;
  if (t <= ts[n - 1])
    {
      *i = n - 1;
      return;
    }
  int k = 0;
  while (ts[k + 1] > t)
    k++;
  /* ts[k] > t >= ts[k + 1] */
  *i = k;
  *wb = (double) (ts[k] - t) / (ts[k] - ts[k + 1]);
  *wa = 1 - *wb;
}

void
ddim_direction_expand (const DdimDirection *d, double strength, int t, int height, int width,
                       float *out)
{
  g_return_if_fail (d != NULL && out != NULL);
  gsize block = ddim_direction_get_block_elements (d);
  const float *a = d->data, *b = d->data;
  float sa = (float) strength, sb = 0;
  if (d->n_timesteps > 0)
    {
      int i;
      double wa, wb;
      block_weights (d, t, &i, &wa, &wb);
      a = d->data + block * i;
      sa = (float) (strength * wa);
      if (wb > 0)
        {
          b = d->data + block * (i + 1);
          sb = (float) (strength * wb);
        }
    }
  if (d->ndim == 3)
    {
      for (gsize k = 0; k < block; k++)
        out[k] = sa * a[k] + sb * b[k];
      return;
    }
  gsize hw = (gsize) height * width;
  for (int ch = 0; ch < d->channels; ch++)
    {
      float v = sa * a[ch] + sb * b[ch];
      float *p = out + (gsize) ch * hw;
      for (gsize k = 0; k < hw; k++)
        p[k] = v;
    }
}

/* Sets. */

DdimDirectionSet *
ddim_direction_set_new (void)
{
  DdimDirectionSet *set = g_new0 (DdimDirectionSet, 1);
  set->items = g_ptr_array_new_with_free_func ((GDestroyNotify) ddim_direction_free);
  return set;
}

void
ddim_direction_set_free (DdimDirectionSet *set)
{
  if (set == NULL)
    return;
  g_ptr_array_unref (set->items);
  g_free (set);
}

guint
ddim_direction_set_get_n (DdimDirectionSet *set)
{
  g_return_val_if_fail (set != NULL, 0);
  return set->items->len;
}

DdimDirection *
ddim_direction_set_get_nth (DdimDirectionSet *set, guint index)
{
  g_return_val_if_fail (set != NULL && index < set->items->len, NULL);
  return g_ptr_array_index (set->items, index);
}

static int
find_index (DdimDirectionSet *set, const char *name)
{
  for (guint i = 0; i < set->items->len; i++)
    if (g_str_equal (((DdimDirection *) g_ptr_array_index (set->items, i))->name, name))
      return (int) i;
  return -1;
}

void
ddim_direction_set_add (DdimDirectionSet *set, DdimDirection *d)
{
  g_return_if_fail (set != NULL && d != NULL && d->name != NULL);
  int i = find_index (set, d->name);
  if (i < 0)
    {
      g_ptr_array_add (set->items, d);
      return;
    }
  ddim_direction_free (g_ptr_array_index (set->items, i));
  g_ptr_array_index (set->items, i) = d;
}

void
ddim_direction_set_merge (DdimDirectionSet *set, DdimDirectionSet *other)
{
  g_return_if_fail (set != NULL && other != NULL);
  for (guint i = 0; i < other->items->len; i++)
    ddim_direction_set_add (set, ddim_direction_copy (g_ptr_array_index (other->items, i)));
}

char *
ddim_direction_set_list_names (DdimDirectionSet *set)
{
  if (set->items->len == 0)
    return g_strdup ("(none)");
  GString *s = g_string_new (NULL);
  for (guint i = 0; i < set->items->len; i++)
    g_string_append_printf (s, "%s%s", i ? ", " : "",
                            ((DdimDirection *) g_ptr_array_index (set->items, i))->name);
  return g_string_free (s, FALSE);
}

/* N from "component-N" (N >= 1), or 0. */
static int
component_number (const char *name)
{
  if (!g_str_has_prefix (name, "component-"))
    return 0;
  const char *digits = name + strlen ("component-");
  if (!g_ascii_isdigit (digits[0]))
    return 0;
  char *end = NULL;
  guint64 v = g_ascii_strtoull (digits, &end, 10);
  return (*end == '\0' && v >= 1 && v <= G_MAXINT) ? (int) v : 0;
}

DdimDirection *
ddim_direction_set_lookup (DdimDirectionSet *set, const char *name, GError **error)
{
  g_return_val_if_fail (set != NULL && name != NULL, NULL);
  int i = find_index (set, name);
  if (i >= 0)
    return g_ptr_array_index (set->items, i);
  int k = component_number (name);
  if (k > 0)
    for (guint j = 0; j < set->items->len; j++)
      {
        DdimDirection *d = g_ptr_array_index (set->items, j);
        if (d->kind != DDIM_DIRECTION_SUPERVISED && --k == 0)
          return d;
      }
  g_autofree char *names = ddim_direction_set_list_names (set);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
               "there is no direction '%s'; available: %s", name, names);
  return NULL;
}

/* File. */

static char *
metadata_json (const DdimDirection *d)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "description");
  json_builder_add_string_value (b, d->description ? d->description : "");
  json_builder_set_member_name (b, "kind");
  json_builder_add_string_value (b, ddim_direction_kind_to_string (d->kind));
  json_builder_set_member_name (b, "space");
  json_builder_add_string_value (b, ddim_direction_space_to_string (d->space));
  json_builder_set_member_name (b, "t_min");
  json_builder_add_int_value (b, d->t_min);
  json_builder_set_member_name (b, "t_max");
  json_builder_add_int_value (b, d->t_max);
  json_builder_set_member_name (b, "strength_min");
  json_builder_add_double_value (b, isfinite (d->strength_min) ? d->strength_min : 0);
  json_builder_set_member_name (b, "strength_max");
  json_builder_add_double_value (b, isfinite (d->strength_max) ? d->strength_max : 0);
  json_builder_set_member_name (b, "sigma");
  json_builder_add_double_value (b, isfinite (d->sigma) ? d->sigma : 0);
  json_builder_set_member_name (b, "model_sha256");
  json_builder_add_string_value (b, d->model_sha256 ? d->model_sha256 : "");
  if (d->method && d->method[0])
    {
      json_builder_set_member_name (b, "method");
      json_builder_add_string_value (b, d->method);
    }
  json_builder_set_member_name (b, "hspace_shape");
  json_builder_begin_array (b);
  json_builder_add_int_value (b, d->hspace_channels);
  json_builder_add_int_value (b, d->hspace_height);
  json_builder_add_int_value (b, d->hspace_width);
  json_builder_end_array (b);
  if (d->n_timesteps > 0)
    {
      json_builder_set_member_name (b, "timesteps");
      json_builder_begin_array (b);
      for (int i = 0; i < d->n_timesteps; i++)
        json_builder_add_int_value (b, d->timesteps[i]);
      json_builder_end_array (b);
    }
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  return json_to_string (root, FALSE);
}

static DdimSafetensorsWriter *
build_writer (DdimDirectionSet *set)
{
  DdimSafetensorsWriter *w = ddim_safetensors_writer_new ();
  gboolean any_per_timestep = FALSE;
  for (guint i = 0; i < set->items->len; i++)
    {
      const DdimDirection *d = g_ptr_array_index (set->items, i);
      any_per_timestep |= d->n_timesteps > 0;
    }
  ddim_safetensors_writer_add_metadata (w, "format", any_per_timestep
                                                         ? DDIM_DIRECTIONS_FORMAT_PER_TIMESTEP
                                                         : DDIM_DIRECTIONS_FORMAT);
  for (guint i = 0; i < set->items->len; i++)
    {
      const DdimDirection *d = g_ptr_array_index (set->items, i);
      g_autofree char *key = g_strconcat (TENSOR_PREFIX, d->name, NULL);
      g_autofree char *json = metadata_json (d);
      gint64 shape[4] = { d->n_timesteps, d->channels, d->height, d->width };
      if (d->n_timesteps > 0)
        ddim_safetensors_writer_add_f32 (w, key, d->ndim + 1, shape, d->data);
      else
        ddim_safetensors_writer_add_f32 (w, key, d->ndim, shape + 1, d->data);
      ddim_safetensors_writer_add_metadata (w, key, json);
    }
  return w;
}

GBytes *
ddim_direction_set_to_bytes (DdimDirectionSet *set)
{
  g_return_val_if_fail (set != NULL, NULL);
  g_autoptr (DdimSafetensorsWriter) w = build_writer (set);
  return ddim_safetensors_writer_to_bytes (w);
}

gboolean
ddim_direction_set_save (DdimDirectionSet *set, const char *path, GError **error)
{
  g_return_val_if_fail (set != NULL && path != NULL, FALSE);
  g_autoptr (DdimSafetensorsWriter) w = build_writer (set);
  return ddim_safetensors_writer_save (w, path, error);
}

static gboolean
member_int (JsonObject *o, const char *name, int *out)
{
  JsonNode *n = json_object_get_member (o, name);
  if (n == NULL)
    return TRUE;   /* optional: keep the default */
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_INT64)
    return FALSE;
  gint64 v = json_node_get_int (n);
  if (v < G_MININT || v > G_MAXINT)
    return FALSE;
  *out = (int) v;
  return TRUE;
}

static gboolean
member_double (JsonObject *o, const char *name, double *out)
{
  JsonNode *n = json_object_get_member (o, name);
  if (n == NULL)
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (n))
    return FALSE;
  GType t = json_node_get_value_type (n);
  if (t == G_TYPE_INT64)
    *out = (double) json_node_get_int (n);
  else if (t == G_TYPE_DOUBLE)
    *out = json_node_get_double (n);
  else
    return FALSE;
  return isfinite (*out);
}

static gboolean
member_string (JsonObject *o, const char *name, char **out)
{
  JsonNode *n = json_object_get_member (o, name);
  if (n == NULL)
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
    return FALSE;
  g_free (*out);
  *out = g_strdup (json_node_get_string (n));
  return TRUE;
}

/* The JSON object of direction @name's metadata @json (held by @parser). */
static JsonObject *
metadata_object (JsonParser *parser, const char *name, const char *json, GError **error)
{
  g_autoptr (GError) sub = NULL;
  if (!json_parser_load_from_data (parser, json, -1, &sub)
      || !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "metadata of direction '%s' is not a JSON object%s%s", name,
                   sub ? ": " : "", sub ? sub->message : "");
      return NULL;
    }
  return json_node_get_object (json_parser_get_root (parser));
}

/* Fills @d's metadata from its JSON object @o. */
static gboolean
parse_metadata (DdimDirection *d, JsonObject *o, GError **error)
{
  g_autofree char *kind = NULL, *space = NULL;
  const char *bad = NULL;
  if (!member_string (o, "description", &d->description))
    bad = "description";
  else if (!member_string (o, "kind", &kind))
    bad = "kind";
  else if (!member_string (o, "space", &space))
    bad = "space";
  else if (!member_int (o, "t_min", &d->t_min))
    bad = "t_min";
  else if (!member_int (o, "t_max", &d->t_max))
    bad = "t_max";
  else if (!member_double (o, "strength_min", &d->strength_min))
    bad = "strength_min";
  else if (!member_double (o, "strength_max", &d->strength_max))
    bad = "strength_max";
  else if (!member_double (o, "sigma", &d->sigma))
    bad = "sigma";
  else if (!member_string (o, "model_sha256", &d->model_sha256))
    bad = "model_sha256";
  else if (!member_string (o, "method", &d->method))
    bad = "method";
  else if (kind && !ddim_direction_kind_from_string (kind, &d->kind, NULL))
    bad = "kind";
  else if (space && !ddim_direction_space_from_string (space, &d->space, NULL))
    bad = "space";
  if (bad == NULL && json_object_has_member (o, "hspace_shape"))
    {
      JsonNode *n = json_object_get_member (o, "hspace_shape");
      JsonArray *a = JSON_NODE_HOLDS_ARRAY (n) ? json_node_get_array (n) : NULL;
      if (a == NULL || json_array_get_length (a) != 3)
        bad = "hspace_shape";
      else
        {
          int v[3];
          for (guint i = 0; i < 3 && !bad; i++)
            {
              JsonNode *e = json_array_get_element (a, i);
              if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_INT64
                  || json_node_get_int (e) < 0 || json_node_get_int (e) > G_MAXINT)
                bad = "hspace_shape";
              else
                v[i] = (int) json_node_get_int (e);
            }
          if (!bad)
            {
              d->hspace_channels = v[0];
              d->hspace_height = v[1];
              d->hspace_width = v[2];
            }
        }
    }
  if (bad)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "metadata of direction '%s': field '%s' has a bad value", d->name, bad);
      return FALSE;
    }
  if (d->space == DDIM_SPACE_X && (d->ndim != 3 || d->n_timesteps > 0))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "direction '%s' is in x-space and must have shape [C, H, W]", d->name);
      return FALSE;
    }
  return TRUE;
}

/* The optional "timesteps" of a direction's metadata: none (n 0), or at
 * least 2 strictly descending timesteps >= 0. */
static gboolean
parse_timesteps (const char *name, JsonObject *o, int **timesteps, int *n, GError **error)
{
  *n = 0;
  JsonNode *node = json_object_get_member (o, "timesteps");
  if (node == NULL)
    return TRUE;
  JsonArray *a = JSON_NODE_HOLDS_ARRAY (node) ? json_node_get_array (node) : NULL;
  guint len = a ? json_array_get_length (a) : 0;
  gboolean ok = len >= 2 && len <= 1000000;
  g_autofree int *ts = ok ? g_new (int, len) : NULL;
  for (guint i = 0; ok && i < len; i++)
    {
      JsonNode *e = json_array_get_element (a, i);
      ok = JSON_NODE_HOLDS_VALUE (e) && json_node_get_value_type (e) == G_TYPE_INT64
           && json_node_get_int (e) >= 0 && json_node_get_int (e) <= G_MAXINT;
      if (ok)
        ts[i] = (int) json_node_get_int (e);
      ok = ok && (i == 0 || ts[i] < ts[i - 1]);
    }
  if (!ok)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "metadata of direction '%s': 'timesteps' must list at least 2 strictly "
                   "descending timesteps", name);
      return FALSE;
    }
  *timesteps = g_steal_pointer (&ts);
  *n = (int) len;
  return TRUE;
}

DdimDirectionSet *
ddim_direction_set_new_from_bytes (GBytes *bytes, GError **error)
{
  g_return_val_if_fail (bytes != NULL, NULL);
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, error);
  if (st == NULL)
    return NULL;
  const char *format = ddim_safetensors_get_metadata (st, "format");
  if (format == NULL || !g_str_has_prefix (format, "ddim-directions/"))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "not a directions file (metadata 'format' is %s%s%s, expected \"%s\")",
                   format ? "\"" : "", format ? format : "missing", format ? "\"" : "",
                   DDIM_DIRECTIONS_FORMAT);
      return NULL;
    }
  const char *ver = format + strlen ("ddim-directions/");
  char *end = NULL;
  guint64 version = g_ascii_strtoull (ver, &end, 10);
  if (end == ver || *end != '\0' || version < 1)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "bad directions format '%s'", format);
      return NULL;
    }
  if (version > DDIM_DIRECTIONS_FORMAT_VERSION)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "directions format '%s' is newer than this version supports (%s)", format,
                   DDIM_DIRECTIONS_FORMAT_PER_TIMESTEP);
      return NULL;
    }

  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  guint n = ddim_safetensors_get_n_tensors (st);
  for (guint i = 0; i < n; i++)
    {
      const DdimTensorInfo *info = ddim_safetensors_get_info_nth (st, i);
      if (!g_str_has_prefix (info->name, TENSOR_PREFIX))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "tensor '%s' in a directions file: names must start with '%s'",
                       info->name, TENSOR_PREFIX);
          return NULL;
        }
      const char *name = info->name + strlen (TENSOR_PREFIX);
      if (!ddim_direction_name_is_valid (name, NULL))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "bad direction name in '%s'",
                       info->name);
          return NULL;
        }
      gboolean shape_ok = info->ndim >= 1 && info->ndim <= 4;
      for (int k = 0; k < info->ndim && shape_ok; k++)
        shape_ok = info->shape[k] >= 1 && info->shape[k] <= G_MAXINT / 4;
      if (!shape_ok)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "direction '%s' must have shape [C, h, w] or [C] (or [n, C, h, w] or "
                       "[n, C] per timestep)", name);
          return NULL;
        }
      const char *json = ddim_safetensors_get_metadata (st, info->name);
      if (json == NULL)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "direction '%s' has no metadata entry '%s'", name, info->name);
          return NULL;
        }
      g_autoptr (JsonParser) parser = json_parser_new ();
      JsonObject *meta = metadata_object (parser, name, json, error);
      if (meta == NULL)
        return NULL;
      g_autofree int *timesteps = NULL;
      int n_timesteps = 0;
      if (!parse_timesteps (name, meta, &timesteps, &n_timesteps, error))
        return NULL;
      if (n_timesteps > 0 && version < 2)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "direction '%s' is per timestep, which format '%s' does not allow "
                       "(it needs \"%s\")", name, format, DDIM_DIRECTIONS_FORMAT_PER_TIMESTEP);
          return NULL;
        }
      gboolean per_timestep = info->ndim == 2 || info->ndim == 4;
      if (per_timestep != (n_timesteps > 0)
          || (per_timestep && info->shape[0] != n_timesteps))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "direction '%s': a tensor of %d dimensions with %d timesteps in its "
                       "metadata (per-timestep directions are [n, C, h, w] or [n, C] with n "
                       "timesteps; others [C, h, w] or [C] without)", name, info->ndim,
                       n_timesteps);
          return NULL;
        }
      const gint64 *shape = per_timestep ? info->shape + 1 : info->shape;
      int ndim = per_timestep ? info->ndim - 1 : info->ndim;
      g_autoptr (DdimDirection) d =
          per_timestep
              ? ddim_direction_new_per_timestep (name, ndim, (int) shape[0],
                                                 ndim == 3 ? (int) shape[1] : 0,
                                                 ndim == 3 ? (int) shape[2] : 0, n_timesteps,
                                                 timesteps)
              : ddim_direction_new (name, DDIM_SPACE_H, ndim, (int) shape[0],
                                    ndim == 3 ? (int) shape[1] : 0,
                                    ndim == 3 ? (int) shape[2] : 0);
      if (!ddim_tensor_info_to_f32 (info, d->data, error))
        return NULL;
      if (!parse_metadata (d, meta, error))
        return NULL;
      ddim_direction_set_add (set, g_steal_pointer (&d));
    }
  return g_steal_pointer (&set);
}

DdimDirectionSet *
ddim_direction_set_load (const char *path, GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, error);
  if (st == NULL)
    return NULL;
  g_autoptr (GError) sub = NULL;
  DdimDirectionSet *set = ddim_direction_set_new_from_bytes (ddim_safetensors_get_bytes (st),
                                                             &sub);
  if (set == NULL)
    g_set_error (error, DDIM_ERROR, sub->code, "%s: %s", path, sub->message);
  return set;
}
