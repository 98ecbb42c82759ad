/* JSON text from a json-glib tree. json-glib 1.6's generator writes some
 * doubles as invalid JSON (1e-08 becomes "1e-08.0"), so every file this
 * library writes goes through this serialiser instead. */
#pragma once

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* @indent > 0: pretty-printed with that many spaces per level; 0: compact.
 * Doubles are written in their shortest round-trip form, NaN and infinities
 * as null. Returns a newly allocated string. */
char *ddim_json_to_string (JsonNode *node, int indent);

G_END_DECLS
