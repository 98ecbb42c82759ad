/* A small JSON serialiser for json-glib trees (see ddim/json.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ddim/json.h"

static void
append_string (GString *out, const char *s)
{
  g_string_append_c (out, '"');
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    switch (*p)
      {
      case '"': g_string_append (out, "\\\""); break;
      case '\\': g_string_append (out, "\\\\"); break;
      case '\n': g_string_append (out, "\\n"); break;
      case '\r': g_string_append (out, "\\r"); break;
      case '\t': g_string_append (out, "\\t"); break;
      default:
        if (*p < 0x20)
          g_string_append_printf (out, "\\u%04x", *p);
        else
          g_string_append_c (out, (char) *p);
      }
  g_string_append_c (out, '"');
}

static void
append_double (GString *out, double v)
{
  if (!isfinite (v))
    {
      g_string_append (out, "null");
      return;
    }
  char buf[G_ASCII_DTOSTR_BUF_SIZE], format[8];
  for (int prec = 1; prec <= 17; prec++)
    {
      g_snprintf (format, sizeof format, "%%.%dg", prec);
      g_ascii_formatd (buf, sizeof buf, format, v);
      if (g_ascii_strtod (buf, NULL) == v)
        break;
    }
  g_string_append (out, buf);
  /* Keep it a float for readers that care (1 -> 1.0). */
  if (strpbrk (buf, ".eE") == NULL)
    g_string_append (out, ".0");
}

static void
newline (GString *out, int indent, int level)
{
  if (indent <= 0)
    return;
  g_string_append_c (out, '\n');
  g_string_append_printf (out, "%*s", indent * level, "");
}

static void
append_node (GString *out, JsonNode *node, int indent, int level)
{
  switch (JSON_NODE_TYPE (node))
    {
    case JSON_NODE_NULL:
      g_string_append (out, "null");
      break;
    case JSON_NODE_VALUE:
      {
        GType t = json_node_get_value_type (node);
        if (t == G_TYPE_STRING)
          append_string (out, json_node_get_string (node));
        else if (t == G_TYPE_BOOLEAN)
          g_string_append (out, json_node_get_boolean (node) ? "true" : "false");
        else if (t == G_TYPE_DOUBLE || t == G_TYPE_FLOAT)
          append_double (out, json_node_get_double (node));
        else
          g_string_append_printf (out, "%" G_GINT64_FORMAT, json_node_get_int (node));
      }
      break;
    case JSON_NODE_ARRAY:
      {
        JsonArray *a = json_node_get_array (node);
        guint n = json_array_get_length (a);
        g_string_append_c (out, '[');
        for (guint i = 0; i < n; i++)
          {
            if (i)
              g_string_append (out, indent > 0 ? ", " : ",");
            append_node (out, json_array_get_element (a, i), indent, level + 1);
          }
        g_string_append_c (out, ']');
      }
      break;
    case JSON_NODE_OBJECT:
      {
        JsonObject *o = json_node_get_object (node);
        g_autoptr (GList) members = json_object_get_members (o);
        g_string_append_c (out, '{');
        for (GList *l = members; l; l = l->next)
          {
            if (l != members)
              g_string_append_c (out, ',');
            newline (out, indent, level + 1);
            append_string (out, l->data);
            g_string_append (out, indent > 0 ? ": " : ":");
            append_node (out, json_object_get_member (o, l->data), indent, level + 1);
          }
        if (members)
          newline (out, indent, level);
        g_string_append_c (out, '}');
      }
      break;
    }
}

char *
ddim_json_to_string (JsonNode *node, int indent)
{
  GString *out = g_string_new (NULL);
  append_node (out, node, indent, 0);
  if (indent > 0)
    g_string_append_c (out, '\n');
  return g_string_free (out, FALSE);
}
