/* Beta schedules, cumulative alphas and timestep spacing, computed the way
 * diffusers does (float32 linspace and cumprod as torch, numpy rounding). */
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "ddim/json.h"
#include "ddim/schedule.h"

/* torch.linspace in float32: the first half counts up from start, the second
 * half down from end, with a float32 step. */
static void
linspace_f32 (float start, float end, int n, float *out)
{
  if (n == 1)
    {
      out[0] = start;
      return;
    }
  float step = (end - start) / (float) (n - 1);
  int halfway = n / 2;
  for (int i = 0; i < n; i++)
    out[i] = i < halfway ? start + step * (float) i : end - step * (float) (n - i - 1);
}

/* np.linspace in float64: start + i * step, the last exactly @end. */
static void
linspace_f64 (double start, double end, int n, double *out)
{
  if (n == 1)
    {
      out[0] = start;
      return;
    }
  double step = (end - start) / (n - 1);
  for (int i = 0; i < n; i++)
    out[i] = (double) i * step + start;
  out[n - 1] = end;
}

/* The betas in float64 (ermongroup's and guided-diffusion's numpy). */
/* Beta @i of @T of the cosine schedule (betas_for_alpha_bar), in double
 * for both arithmetics, at most 0.999. */
static double
cosine_beta (int i, int T)
{
  double t1 = (double) i / T, t2 = (double) (i + 1) / T;
  double a1 = pow (cos ((t1 + 0.008) / 1.008 * G_PI / 2), 2);
  double a2 = pow (cos ((t2 + 0.008) / 1.008 * G_PI / 2), 2);
  return MIN (1 - a2 / a1, 0.999);
}

static void
betas_f64 (const DdimSchedule *s, double *betas)
{
  int T = s->num_train_timesteps;
  switch (s->beta_schedule)
    {
    case DDIM_BETA_LINEAR:
      linspace_f64 (s->beta_start, s->beta_end, T, betas);
      break;
    case DDIM_BETA_SCALED_LINEAR:
      /* ermongroup "quad": linspace of the square roots, squared. */
      linspace_f64 (sqrt (s->beta_start), sqrt (s->beta_end), T, betas);
      for (int i = 0; i < T; i++)
        betas[i] = betas[i] * betas[i];
      break;
    case DDIM_BETA_SQUAREDCOS_CAP_V2:
      for (int i = 0; i < T; i++)
        betas[i] = cosine_beta (i, T);
      break;
    }
}

static void
compute_alphas_f64 (DdimSchedule *s)
{
  int T = s->num_train_timesteps;
  g_autofree double *betas = g_new (double, T);
  betas_f64 (s, betas);
  g_free (s->alphas_cumprod);
  s->alphas_cumprod = g_new (float, T);
  double acc = 1.0;
  for (int i = 0; i < T; i++)
    {
      if (s->arithmetic == DDIM_ALPHAS_FLOAT64_BETAS)
        acc *= (double) (1.f - (float) betas[i]);
      else
        acc *= 1.0 - betas[i];
      s->alphas_cumprod[i] = (float) acc;
    }
}

static void
compute_alphas (DdimSchedule *s)
{
  int T = s->num_train_timesteps;
  if (s->arithmetic != DDIM_ALPHAS_FLOAT32)
    {
      compute_alphas_f64 (s);
      return;
    }
  g_autofree float *betas = g_new (float, T);
  switch (s->beta_schedule)
    {
    case DDIM_BETA_LINEAR:
      linspace_f32 ((float) s->beta_start, (float) s->beta_end, T, betas);
      break;
    case DDIM_BETA_SCALED_LINEAR:
      linspace_f32 ((float) sqrt (s->beta_start), (float) sqrt (s->beta_end), T, betas);
      for (int i = 0; i < T; i++)
        betas[i] = betas[i] * betas[i];
      break;
    case DDIM_BETA_SQUAREDCOS_CAP_V2:
      for (int i = 0; i < T; i++)
        betas[i] = (float) cosine_beta (i, T);
      break;
    }
  g_free (s->alphas_cumprod);
  s->alphas_cumprod = g_new (float, T);
  float acc = 1.f;
  for (int i = 0; i < T; i++)
    {
      acc *= 1.f - betas[i];
      s->alphas_cumprod[i] = acc;
    }
}

DdimSchedule *
ddim_schedule_new_default (void)
{
  DdimSchedule *s = g_new0 (DdimSchedule, 1);
  s->num_train_timesteps = 1000;
  s->beta_start = 0.0001;
  s->beta_end = 0.02;
  s->beta_schedule = DDIM_BETA_LINEAR;
  s->prediction = DDIM_PREDICT_EPSILON;
  s->spacing = DDIM_SPACING_LEADING;
  s->steps_offset = 0;
  s->set_alpha_to_one = TRUE;
  s->clip_sample = TRUE;
  s->clip_sample_range = 1.0;
  compute_alphas (s);
  return s;
}

DdimSchedule *
ddim_schedule_new_betas (DdimBetaSchedule beta_schedule, double beta_start, double beta_end,
                         int num_train_timesteps, DdimAlphasArithmetic arithmetic)
{
  g_return_val_if_fail (num_train_timesteps >= 1, NULL);
  DdimSchedule *s = ddim_schedule_new_default ();
  s->beta_schedule = beta_schedule;
  s->beta_start = beta_start;
  s->beta_end = beta_end;
  s->num_train_timesteps = num_train_timesteps;
  s->arithmetic = arithmetic;
  compute_alphas (s);
  return s;
}

void
ddim_schedule_update (DdimSchedule *s)
{
  g_return_if_fail (s != NULL);
  compute_alphas (s);
}

DdimSchedule *
ddim_schedule_copy (const DdimSchedule *src)
{
  DdimSchedule *s = g_memdup2 (src, sizeof *src);
  s->alphas_cumprod = g_memdup2 (src->alphas_cumprod, sizeof (float) * src->num_train_timesteps);
  return s;
}

void
ddim_schedule_free (DdimSchedule *s)
{
  if (s == NULL)
    return;
  g_free (s->alphas_cumprod);
  g_free (s);
}

static gboolean
field_error (GError **error, const char *field, const char *what)
{
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "scheduler config: field '%s' %s", field, what);
  return FALSE;
}

static gboolean
read_number (JsonObject *o, const char *name, double *out, GError **error)
{
  JsonNode *n = json_object_get_member (o, name);
  if (n == NULL || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  if (JSON_NODE_TYPE (n) != JSON_NODE_VALUE || json_node_get_value_type (n) == G_TYPE_STRING
      || json_node_get_value_type (n) == G_TYPE_BOOLEAN)
    return field_error (error, name, "must be a number");
  *out = json_node_get_double (n);
  return TRUE;
}

static gboolean
read_bool (JsonObject *o, const char *name, gboolean *out, GError **error)
{
  JsonNode *n = json_object_get_member (o, name);
  if (n == NULL || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  if (JSON_NODE_TYPE (n) != JSON_NODE_VALUE || json_node_get_value_type (n) != G_TYPE_BOOLEAN)
    return field_error (error, name, "must be true or false");
  *out = json_node_get_boolean (n);
  return TRUE;
}

static gboolean
read_string (JsonObject *o, const char *name, const char **out, GError **error)
{
  JsonNode *n = json_object_get_member (o, name);
  if (n == NULL || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  if (JSON_NODE_TYPE (n) != JSON_NODE_VALUE || json_node_get_value_type (n) != G_TYPE_STRING)
    return field_error (error, name, "must be a string");
  *out = json_node_get_string (n);
  return TRUE;
}

static gboolean
unsupported (GError **error, const char *field, const char *value)
{
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
               "scheduler config: %s '%s' is not supported", field, value);
  return FALSE;
}

DdimSchedule *
ddim_schedule_parse (const char *json, gssize length, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) local = NULL;
  if (!json_parser_load_from_data (parser, json, length, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "scheduler config is not valid JSON: %s", local->message);
      return NULL;
    }
  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "scheduler config: the top level must be a JSON object");
      return NULL;
    }
  JsonObject *o = json_node_get_object (root);
  g_autoptr (DdimSchedule) s = ddim_schedule_new_default ();
  double T = s->num_train_timesteps, offset = 0;
  const char *beta = "linear", *pred = "epsilon", *spacing = "leading";
  const char *arithmetic = "float32", *variance = "fixed_small";
  gboolean thresholding = FALSE;
  if (!read_number (o, "num_train_timesteps", &T, error)
      || !read_number (o, "beta_start", &s->beta_start, error)
      || !read_number (o, "beta_end", &s->beta_end, error)
      || !read_number (o, "steps_offset", &offset, error)
      || !read_number (o, "clip_sample_range", &s->clip_sample_range, error)
      || !read_bool (o, "set_alpha_to_one", &s->set_alpha_to_one, error)
      || !read_bool (o, "clip_sample", &s->clip_sample, error)
      || !read_bool (o, "thresholding", &thresholding, error)
      || !read_string (o, "beta_schedule", &beta, error)
      || !read_string (o, "prediction_type", &pred, error)
      || !read_string (o, "timestep_spacing", &spacing, error)
      || !read_string (o, "ddim_alphas_arithmetic", &arithmetic, error)
      || !read_string (o, "variance_type", &variance, error))
    return NULL;
  if (g_str_equal (arithmetic, "float32"))
    s->arithmetic = DDIM_ALPHAS_FLOAT32;
  else if (g_str_equal (arithmetic, "float64-betas"))
    s->arithmetic = DDIM_ALPHAS_FLOAT64_BETAS;
  else if (g_str_equal (arithmetic, "float64"))
    s->arithmetic = DDIM_ALPHAS_FLOAT64;
  else
    return unsupported (error, "ddim_alphas_arithmetic", arithmetic) ? NULL : NULL;
  /* DDIM uses no variance; "learned_range" / "learned" only say the model
   * has variance channels. */
  s->learned_variance = g_str_equal (variance, "learned_range") || g_str_equal (variance, "learned");
  JsonNode *tb = json_object_get_member (o, "trained_betas");
  if (tb != NULL && !JSON_NODE_HOLDS_NULL (tb))
    return unsupported (error, "trained_betas", "(a list)") ? NULL : NULL;
  if (thresholding)
    return unsupported (error, "thresholding", "true") ? NULL : NULL;
  if (T != floor (T) || T < 2 || T > 100000)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "scheduler config: num_train_timesteps %g is not valid", T);
      return NULL;
    }
  if (offset != floor (offset) || offset < 0 || offset >= T)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "scheduler config: steps_offset %g is not valid", offset);
      return NULL;
    }
  s->num_train_timesteps = (int) T;
  s->steps_offset = (int) offset;
  if (g_str_equal (beta, "linear"))
    s->beta_schedule = DDIM_BETA_LINEAR;
  else if (g_str_equal (beta, "scaled_linear"))
    s->beta_schedule = DDIM_BETA_SCALED_LINEAR;
  else if (g_str_equal (beta, "squaredcos_cap_v2"))
    s->beta_schedule = DDIM_BETA_SQUAREDCOS_CAP_V2;
  else
    return unsupported (error, "beta_schedule", beta) ? NULL : NULL;
  if (g_str_equal (pred, "epsilon"))
    s->prediction = DDIM_PREDICT_EPSILON;
  else if (g_str_equal (pred, "v_prediction"))
    s->prediction = DDIM_PREDICT_V;
  else if (g_str_equal (pred, "sample"))
    s->prediction = DDIM_PREDICT_SAMPLE;
  else
    return unsupported (error, "prediction_type", pred) ? NULL : NULL;
  if (!ddim_spacing_from_string (spacing, &s->spacing, error))
    return NULL;
  if (!(s->beta_start > 0 && s->beta_end > 0 && s->beta_start < 1 && s->beta_end < 1))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "scheduler config: beta_start %g / beta_end %g are not valid",
                   s->beta_start, s->beta_end);
      return NULL;
    }
  compute_alphas (s);
  return g_steal_pointer (&s);
}

DdimSchedule *
ddim_schedule_load (const char *path, GError **error)
{
  g_autofree char *contents = NULL;
  gsize len = 0;
  g_autoptr (GError) local = NULL;
  if (!g_file_get_contents (path, &contents, &len, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read %s: %s", path, local->message);
      return NULL;
    }
  return ddim_schedule_parse (contents, (gssize) len, error);
}

char *
ddim_schedule_to_json (const DdimSchedule *s)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "_class_name");
  json_builder_add_string_value (b, "DDIMScheduler");
  json_builder_set_member_name (b, "_diffusers_version");
  json_builder_add_string_value (b, "0.20.0");
  json_builder_set_member_name (b, "beta_end");
  json_builder_add_double_value (b, s->beta_end);
  json_builder_set_member_name (b, "beta_schedule");
  json_builder_add_string_value (b, ddim_beta_schedule_to_string (s->beta_schedule));
  json_builder_set_member_name (b, "beta_start");
  json_builder_add_double_value (b, s->beta_start);
  json_builder_set_member_name (b, "clip_sample");
  json_builder_add_boolean_value (b, s->clip_sample);
  json_builder_set_member_name (b, "clip_sample_range");
  json_builder_add_double_value (b, s->clip_sample_range);
  if (s->arithmetic != DDIM_ALPHAS_FLOAT32)
    {
      json_builder_set_member_name (b, "ddim_alphas_arithmetic");
      json_builder_add_string_value (b, s->arithmetic == DDIM_ALPHAS_FLOAT64 ? "float64"
                                                                             : "float64-betas");
    }
  json_builder_set_member_name (b, "num_train_timesteps");
  json_builder_add_int_value (b, s->num_train_timesteps);
  json_builder_set_member_name (b, "prediction_type");
  json_builder_add_string_value (b, ddim_prediction_to_string (s->prediction));
  json_builder_set_member_name (b, "set_alpha_to_one");
  json_builder_add_boolean_value (b, s->set_alpha_to_one);
  json_builder_set_member_name (b, "steps_offset");
  json_builder_add_int_value (b, s->steps_offset);
  json_builder_set_member_name (b, "timestep_spacing");
  json_builder_add_string_value (b, ddim_spacing_to_string (s->spacing));
  json_builder_set_member_name (b, "trained_betas");
  json_builder_add_null_value (b);
  if (s->learned_variance)
    {
      json_builder_set_member_name (b, "variance_type");
      json_builder_add_string_value (b, "learned_range");
    }
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  return ddim_json_to_string (root, 2);
}

float
ddim_schedule_alpha (const DdimSchedule *s, int t)
{
  if (t < 0)
    return s->set_alpha_to_one ? 1.f : s->alphas_cumprod[0];
  g_return_val_if_fail (t < s->num_train_timesteps, 1.f);
  return s->alphas_cumprod[t];
}

int
ddim_schedule_step_ratio (const DdimSchedule *s, int n_steps)
{
  return s->num_train_timesteps / n_steps;
}

int *
ddim_schedule_timesteps (const DdimSchedule *s, int n, DdimSpacing spacing, GError **error)
{
  int T = s->num_train_timesteps;
  if (n < 1 || n > T)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the number of steps must be between 1 and %d, not %d", T, n);
      return NULL;
    }
  int *ts = g_new (int, n);
  switch (spacing)
    {
    case DDIM_SPACING_LEADING:
      for (int i = 0; i < n; i++)
        ts[n - 1 - i] = i * (T / n) + s->steps_offset;
      break;
    case DDIM_SPACING_TRAILING:
      /* np.round(np.arange(T, 0, -T/n)) - 1 */
      for (int i = 0; i < n; i++)
        ts[i] = (int) nearbyint ((double) T - (double) i * ((double) T / n)) - 1;
      break;
    case DDIM_SPACING_LINSPACE:
      /* np.linspace(0, T-1, n).round()[::-1] */
      for (int i = 0; i < n; i++)
        {
          double v = n == 1 ? 0.0 : (i == n - 1 ? T - 1.0 : i * ((T - 1.0) / (n - 1)));
          ts[n - 1 - i] = (int) nearbyint (v);
        }
      break;
    }
  for (int i = 0; i < n; i++)
    if (ts[i] < 0 || ts[i] >= T)
      {
        g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                     "timestep %d (from %d steps, steps_offset %d) is outside 0..%d",
                     ts[i], n, s->steps_offset, T - 1);
        g_free (ts);
        return NULL;
      }
  return ts;
}

const char *
ddim_spacing_to_string (DdimSpacing spacing)
{
  switch (spacing)
    {
    case DDIM_SPACING_TRAILING: return "trailing";
    case DDIM_SPACING_LINSPACE: return "linspace";
    case DDIM_SPACING_LEADING:
    default: return "leading";
    }
}

gboolean
ddim_spacing_from_string (const char *str, DdimSpacing *spacing, GError **error)
{
  if (g_strcmp0 (str, "leading") == 0)
    *spacing = DDIM_SPACING_LEADING;
  else if (g_strcmp0 (str, "trailing") == 0)
    *spacing = DDIM_SPACING_TRAILING;
  else if (g_strcmp0 (str, "linspace") == 0)
    *spacing = DDIM_SPACING_LINSPACE;
  else
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "timestep spacing '%s' is not one of leading, trailing, linspace",
                   str ? str : "(null)");
      return FALSE;
    }
  return TRUE;
}

const char *
ddim_prediction_to_string (DdimPrediction p)
{
  return p == DDIM_PREDICT_V ? "v_prediction" : p == DDIM_PREDICT_SAMPLE ? "sample" : "epsilon";
}

const char *
ddim_beta_schedule_to_string (DdimBetaSchedule b)
{
  return b == DDIM_BETA_SCALED_LINEAR ? "scaled_linear"
         : b == DDIM_BETA_SQUAREDCOS_CAP_V2 ? "squaredcos_cap_v2" : "linear";
}
