/* A small sequential convolutional network (see ddim/convnet.h): layers
 * built from the ops (conv2d, group norm, SiLU, linear, upsampling), each
 * with its forward and backward side by side, a tape of activations, an
 * AdamW trainer step and an atomic model folder. */
#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ddim/convnet.h"
#include "ddim/error.h"
#include "ddim/json.h"
#include "ddim/safetensors.h"
#include "ops/ops.h"

#define CONVNET_FORMAT "ddim-convnet"
#define CONVNET_VERSION 1
#define GN_EPS 1e-5f
#define INFER_CHUNK 64
#define NO_PARAM ((gsize) -1)

typedef struct {
  DdimConvNetLayerKind kind;
  int      arg;          /* conv/linear: outputs; gn: groups; add: source layer */
  int      stride;       /* conv: 1 or 2 */
  int      cin, cout;
  gboolean flat;         /* the output is [n, F] */
  gsize    w_off, b_off; /* NO_PARAM when the layer has none */
  gboolean skip_source;  /* some later add reads this layer's output */
} Layer;

typedef struct {
  char  *name;
  int    ndim;
  gint64 shape[4];
  gsize  offset, size;
  gboolean decay;        /* conv and linear weights */
} Tensor;

struct _DdimConvNet {
  int         in_channels;
  int         n_layers;
  Layer      *layers;
  gsize       n_params;
  float      *params;
  guint       n_tensors;
  Tensor     *tensors;
  GHashTable *metadata;  /* char * -> char * */
};

/* ---- random numbers ---- */

static guint64
splitmix (guint64 *s)
{
  guint64 z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double
uniform_pm1 (guint64 *s)
{
  return (double) (splitmix (s) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* ---- architecture ---- */

static const char *
kind_name (DdimConvNetLayerKind k)
{
  switch (k)
    {
    case DDIM_CONVNET_CONV: return "conv";
    case DDIM_CONVNET_GROUP_NORM: return "gn";
    case DDIM_CONVNET_SILU: return "silu";
    case DDIM_CONVNET_UPSAMPLE: return "up";
    case DDIM_CONVNET_ADD: return "add";
    case DDIM_CONVNET_POOL: return "pool";
    case DDIM_CONVNET_LINEAR: return "linear";
    default: return "?";
    }
}

static char *
layer_to_string (const Layer *l)
{
  switch (l->kind)
    {
    case DDIM_CONVNET_CONV:
      return l->stride == 2 ? g_strdup_printf ("conv %d s2", l->arg)
                            : g_strdup_printf ("conv %d", l->arg);
    case DDIM_CONVNET_GROUP_NORM:
    case DDIM_CONVNET_ADD:
    case DDIM_CONVNET_LINEAR:
      return g_strdup_printf ("%s %d", kind_name (l->kind), l->arg);
    default:
      return g_strdup (kind_name (l->kind));
    }
}

static gboolean
parse_int (const char *s, int min, int max, int *out)
{
  guint64 v;
  if (s == NULL || !g_ascii_string_to_unsigned (s, 10, (guint64) min, (guint64) max, &v, NULL))
    return FALSE;
  *out = (int) v;
  return TRUE;
}

/* Parses one layer (already stripped) into @l; @index and @layers (the
 * earlier ones) give the context. */
static gboolean
parse_layer (const char *text, int index, const Layer *layers, int cin, gboolean flat, Layer *l,
             GError **error)
{
  g_auto (GStrv) tok = g_strsplit_set (text, " \t", -1);
  /* Drop empty tokens (several spaces). */
  int nt = 0;
  for (int i = 0; tok[i]; i++)
    if (tok[i][0] != '\0')
      tok[nt++] = tok[i];
    else
      g_free (tok[i]);
  tok[nt] = NULL;
  memset (l, 0, sizeof *l);
  l->cin = cin;
  l->cout = cin;
  l->flat = flat;
  l->stride = 1;
  l->w_off = l->b_off = NO_PARAM;
  const char *bad = NULL;
  const char *k = tok[0];
  int nargs = nt - 1;
  if (g_str_equal (k, "conv"))
    {
      l->kind = DDIM_CONVNET_CONV;
      if (nargs < 1 || nargs > 2 || !parse_int (tok[1], 1, 65536, &l->arg))
        bad = "expected 'conv CHANNELS' or 'conv CHANNELS s2'";
      else if (nargs == 2 && !g_str_equal (tok[2], "s2") && !g_str_equal (tok[2], "s1"))
        bad = "the stride must be s1 or s2";
      else if (flat)
        bad = "a convolution needs a spatial input (it comes after pool or linear)";
      else
        {
          l->stride = nargs == 2 && g_str_equal (tok[2], "s2") ? 2 : 1;
          l->cout = l->arg;
        }
    }
  else if (g_str_equal (k, "gn"))
    {
      l->kind = DDIM_CONVNET_GROUP_NORM;
      if (nargs != 1 || !parse_int (tok[1], 1, 65536, &l->arg))
        bad = "expected 'gn GROUPS'";
      else if (cin % l->arg != 0)
        bad = "the groups must divide the channels";
    }
  else if (g_str_equal (k, "silu") || g_str_equal (k, "up") || g_str_equal (k, "pool"))
    {
      l->kind = g_str_equal (k, "silu") ? DDIM_CONVNET_SILU
                : g_str_equal (k, "up") ? DDIM_CONVNET_UPSAMPLE : DDIM_CONVNET_POOL;
      if (nargs != 0)
        bad = "takes no argument";
      else if (flat && l->kind != DDIM_CONVNET_SILU)
        bad = "needs a spatial input (it comes after pool or linear)";
      if (l->kind == DDIM_CONVNET_POOL)
        l->flat = TRUE;
    }
  else if (g_str_equal (k, "add"))
    {
      l->kind = DDIM_CONVNET_ADD;
      if (nargs != 1 || !parse_int (tok[1], 0, G_MAXINT, &l->arg))
        bad = "expected 'add LAYER' (the index of an earlier layer)";
      else if (l->arg >= index)
        bad = "can only add the output of an earlier layer";
      else if (layers[l->arg].cout != cin || layers[l->arg].flat != flat)
        bad = "the added layer's output has another shape";
    }
  else if (g_str_equal (k, "linear"))
    {
      l->kind = DDIM_CONVNET_LINEAR;
      if (nargs != 1 || !parse_int (tok[1], 1, 1 << 24, &l->arg))
        bad = "expected 'linear FEATURES'";
      else if (!flat)
        bad = "a linear layer needs a flat input (put pool before it)";
      else
        l->cout = l->arg;
    }
  else
    bad = "unknown layer (conv, gn, silu, up, add, pool or linear)";
  if (bad)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "network layer %d ('%s'): %s", index,
                   text, bad);
      return FALSE;
    }
  return TRUE;
}

static void
add_tensor (DdimConvNet *net, GArray *tensors, int layer, const char *what, int ndim,
            const gint64 *shape, gboolean decay, gsize *off)
{
  Tensor t = { 0 };
  t.name = g_strdup_printf ("layers.%d.%s", layer, what);
  t.ndim = ndim;
  t.size = 1;
  for (int d = 0; d < ndim; d++)
    {
      t.shape[d] = shape[d];
      t.size *= (gsize) shape[d];
    }
  t.offset = net->n_params;
  t.decay = decay;
  *off = net->n_params;
  net->n_params += t.size;
  g_array_append_val (tensors, t);
}

void
ddim_convnet_free (DdimConvNet *net)
{
  if (net == NULL)
    return;
  for (guint i = 0; i < net->n_tensors; i++)
    g_free (net->tensors[i].name);
  g_free (net->tensors);
  g_free (net->layers);
  g_free (net->params);
  if (net->metadata)
    g_hash_table_unref (net->metadata);
  g_free (net);
}

DdimConvNet *
ddim_convnet_new (int in_channels, const char *arch, GError **error)
{
  g_return_val_if_fail (arch != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  if (in_channels < 1 || in_channels > 65536)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "network input channels must be between 1 and 65536, not %d", in_channels);
      return NULL;
    }
  g_auto (GStrv) parts = g_strsplit_set (arch, ",;\n", -1);
  g_autoptr (GArray) layers = g_array_new (FALSE, TRUE, sizeof (Layer));
  int c = in_channels;
  gboolean flat = FALSE;
  for (int i = 0; parts[i]; i++)
    {
      char *text = g_strstrip (parts[i]);
      if (*text == '\0')
        continue;
      Layer l;
      if (!parse_layer (text, (int) layers->len, (const Layer *) (gpointer) layers->data, c,
                        flat, &l, error))
        return NULL;
      if (l.kind == DDIM_CONVNET_ADD)
        g_array_index (layers, Layer, l.arg).skip_source = TRUE;
      c = l.cout;
      flat = l.flat;
      g_array_append_val (layers, l);
    }
  if (layers->len == 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "the network description is empty");
      return NULL;
    }
  g_autoptr (DdimConvNet) net = g_new0 (DdimConvNet, 1);
  net->in_channels = in_channels;
  net->n_layers = (int) layers->len;
  net->layers = (Layer *) (gpointer) g_array_free (g_steal_pointer (&layers), FALSE);
  net->metadata = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_autoptr (GArray) tensors = g_array_new (FALSE, TRUE, sizeof (Tensor));
  for (int i = 0; i < net->n_layers; i++)
    {
      Layer *l = &net->layers[i];
      gint64 bshape[1] = { l->cout };
      if (l->kind == DDIM_CONVNET_CONV)
        {
          gint64 wshape[4] = { l->cout, l->cin, 3, 3 };
          add_tensor (net, tensors, i, "weight", 4, wshape, TRUE, &l->w_off);
          add_tensor (net, tensors, i, "bias", 1, bshape, FALSE, &l->b_off);
        }
      else if (l->kind == DDIM_CONVNET_LINEAR)
        {
          gint64 wshape[2] = { l->cout, l->cin };
          add_tensor (net, tensors, i, "weight", 2, wshape, TRUE, &l->w_off);
          add_tensor (net, tensors, i, "bias", 1, bshape, FALSE, &l->b_off);
        }
      else if (l->kind == DDIM_CONVNET_GROUP_NORM)
        {
          add_tensor (net, tensors, i, "weight", 1, bshape, FALSE, &l->w_off);
          add_tensor (net, tensors, i, "bias", 1, bshape, FALSE, &l->b_off);
        }
    }
  net->n_tensors = tensors->len;
  net->tensors = (Tensor *) (gpointer) g_array_free (g_steal_pointer (&tensors), FALSE);
  net->params = g_new0 (float, MAX (net->n_params, 1));
  return g_steal_pointer (&net);
}

int
ddim_convnet_get_in_channels (const DdimConvNet *net)
{
  g_return_val_if_fail (net != NULL, 0);
  return net->in_channels;
}

char *
ddim_convnet_get_arch (const DdimConvNet *net)
{
  g_return_val_if_fail (net != NULL, NULL);
  GString *s = g_string_new (NULL);
  for (int i = 0; i < net->n_layers; i++)
    {
      g_autofree char *t = layer_to_string (&net->layers[i]);
      g_string_append_printf (s, "%s%s", i ? ", " : "", t);
    }
  return g_string_free (s, FALSE);
}

int
ddim_convnet_get_n_layers (const DdimConvNet *net)
{
  g_return_val_if_fail (net != NULL, 0);
  return net->n_layers;
}

DdimConvNetLayerKind
ddim_convnet_get_layer_kind (const DdimConvNet *net, int layer)
{
  g_return_val_if_fail (net != NULL && layer >= 0 && layer < net->n_layers, DDIM_CONVNET_CONV);
  return net->layers[layer].kind;
}

int
ddim_convnet_get_out_channels (const DdimConvNet *net)
{
  g_return_val_if_fail (net != NULL, 0);
  return net->layers[net->n_layers - 1].cout;
}

gboolean
ddim_convnet_is_flat (const DdimConvNet *net)
{
  g_return_val_if_fail (net != NULL, FALSE);
  return net->layers[net->n_layers - 1].flat;
}

gsize
ddim_convnet_get_n_params (const DdimConvNet *net)
{
  g_return_val_if_fail (net != NULL, 0);
  return net->n_params;
}

float *
ddim_convnet_get_params (DdimConvNet *net)
{
  g_return_val_if_fail (net != NULL, NULL);
  return net->params;
}

guint
ddim_convnet_get_n_tensors (const DdimConvNet *net)
{
  g_return_val_if_fail (net != NULL, 0);
  return net->n_tensors;
}

const char *
ddim_convnet_get_tensor (const DdimConvNet *net, guint index, int *ndim, gint64 shape[4],
                         gsize *offset)
{
  g_return_val_if_fail (net != NULL && index < net->n_tensors, NULL);
  const Tensor *t = &net->tensors[index];
  if (ndim)
    *ndim = t->ndim;
  if (shape)
    for (int d = 0; d < t->ndim; d++)
      shape[d] = t->shape[d];
  if (offset)
    *offset = t->offset;
  return t->name;
}

void
ddim_convnet_init_params (DdimConvNet *net, guint64 seed)
{
  g_return_if_fail (net != NULL);
  guint64 s = seed ^ 0x3c6ef372fe94f82bULL;
  for (int i = 0; i < net->n_layers; i++)
    {
      const Layer *l = &net->layers[i];
      if (l->kind == DDIM_CONVNET_GROUP_NORM)
        {
          for (int c = 0; c < l->cout; c++)
            {
              net->params[l->w_off + c] = 1.f;
              net->params[l->b_off + c] = 0.f;
            }
        }
      else if (l->kind == DDIM_CONVNET_CONV || l->kind == DDIM_CONVNET_LINEAR)
        {
          gsize fan_in = (gsize) l->cin * (l->kind == DDIM_CONVNET_CONV ? 9 : 1);
          gsize nw = fan_in * (gsize) l->cout;
          double bound = 1.0 / sqrt ((double) fan_in);
          for (gsize j = 0; j < nw; j++)
            net->params[l->w_off + j] = (float) (bound * uniform_pm1 (&s));
          for (int c = 0; c < l->cout; c++)
            net->params[l->b_off + c] = (float) (bound * uniform_pm1 (&s));
        }
    }
}

void
ddim_convnet_set_metadata (DdimConvNet *net, const char *key, const char *value)
{
  g_return_if_fail (net != NULL && key != NULL);
  if (value == NULL)
    g_hash_table_remove (net->metadata, key);
  else
    g_hash_table_insert (net->metadata, g_strdup (key), g_strdup (value));
}

const char *
ddim_convnet_get_metadata (const DdimConvNet *net, const char *key)
{
  g_return_val_if_fail (net != NULL && key != NULL, NULL);
  return g_hash_table_lookup (net->metadata, key);
}

/* ---- shapes ---- */

/* Output height and width of every layer for an input of h x w (arrays of
 * n_layers). */
static gboolean
plan_sizes (const DdimConvNet *net, int h, int w, int *hs, int *ws, GError **error)
{
  if (h < 1 || w < 1 || h > 65536 || w > 65536)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the network input must be between 1x1 and 65536x65536, not %dx%d", w, h);
      return FALSE;
    }
  int ch = h, cw = w;
  for (int i = 0; i < net->n_layers; i++)
    {
      const Layer *l = &net->layers[i];
      switch (l->kind)
        {
        case DDIM_CONVNET_CONV:
          ch = ddim_conv2d_out_size (ch, 3, l->stride, 1, 1);
          cw = ddim_conv2d_out_size (cw, 3, l->stride, 1, 1);
          break;
        case DDIM_CONVNET_UPSAMPLE:
          ch *= 2;
          cw *= 2;
          break;
        case DDIM_CONVNET_POOL:
          ch = cw = 1;
          break;
        case DDIM_CONVNET_ADD:
          if (hs[l->arg] != ch || ws[l->arg] != cw)
            {
              g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                           "a %dx%d input does not fit the network: layer %d adds a %dx%d "
                           "output to a %dx%d one (use a size divisible by a power of 2)",
                           w, h, i, ws[l->arg], hs[l->arg], cw, ch);
              return FALSE;
            }
          break;
        default:
          break;
        }
      hs[i] = ch;
      ws[i] = cw;
    }
  return TRUE;
}

gboolean
ddim_convnet_output_size (const DdimConvNet *net, int height, int width, int *out_height,
                          int *out_width, GError **error)
{
  g_return_val_if_fail (net != NULL, FALSE);
  g_autofree int *hs = g_new (int, net->n_layers);
  g_autofree int *ws = g_new (int, net->n_layers);
  if (!plan_sizes (net, height, width, hs, ws, error))
    return FALSE;
  if (out_height)
    *out_height = hs[net->n_layers - 1];
  if (out_width)
    *out_width = ws[net->n_layers - 1];
  return TRUE;
}

/* ---- tape ---- */

struct _DdimConvNetTape {
  DdimArena arena;
  float    *x;          /* copy of the input */
  gsize     x_cap;
  float    *acts;       /* every layer's output, consecutive */
  gsize     acts_cap;
  gsize    *offsets;    /* per layer, into acts */
  int      *hs, *ws;
  int       layers_cap;
  int       n, h, w;
  int       n_layers;   /* of the net of the last forward; 0: none */
};

DdimConvNetTape *
ddim_convnet_tape_new (void)
{
  DdimConvNetTape *t = g_new0 (DdimConvNetTape, 1);
  ddim_arena_init (&t->arena);
  return t;
}

void
ddim_convnet_tape_free (DdimConvNetTape *t)
{
  if (t == NULL)
    return;
  ddim_arena_clear (&t->arena);
  g_free (t->x);
  g_free (t->acts);
  g_free (t->offsets);
  g_free (t->hs);
  g_free (t->ws);
  g_free (t);
}

static gsize
layer_count (const Layer *l, int n, int h, int w)
{
  return (gsize) n * l->cout * (gsize) h * w;
}

/* Layer @i's forward: in [n, cin, h, w] (h, w of the input) -> out. */
static void
layer_forward (const DdimConvNet *net, DdimConvNetTape *t, int i, const float *in, int n, int h,
               int w, float *out)
{
  const Layer *l = &net->layers[i];
  const float *p = net->params;
  gsize hw = (gsize) h * w, count = (gsize) n * l->cin * hw;
  switch (l->kind)
    {
    case DDIM_CONVNET_CONV:
      ddim_conv2d_forward (in, n, l->cin, h, w, p + l->w_off, p + l->b_off, l->cout, 3,
                           l->stride, 1, 1, out, &t->arena);
      break;
    case DDIM_CONVNET_GROUP_NORM:
      ddim_group_norm_forward (in, n, l->cin, (int) hw, l->arg, GN_EPS, p + l->w_off,
                               p + l->b_off, FALSE, out);
      break;
    case DDIM_CONVNET_SILU:
      memcpy (out, in, count * sizeof (float));
      ddim_silu_forward (out, count);
      break;
    case DDIM_CONVNET_UPSAMPLE:
      ddim_upsample_nearest2x_forward (in, n, l->cin, h, w, out);
      break;
    case DDIM_CONVNET_ADD:
      {
        const float *skip = t->acts + t->offsets[l->arg];
        for (gsize j = 0; j < count; j++)
          out[j] = in[j] + skip[j];
      }
      break;
    case DDIM_CONVNET_POOL:
      for (gsize pl = 0; pl < (gsize) n * l->cin; pl++)
        {
          double s = 0;
          for (gsize j = 0; j < hw; j++)
            s += in[pl * hw + j];
          out[pl] = (float) (s / (double) hw);
        }
      break;
    case DDIM_CONVNET_LINEAR:
      ddim_linear_forward (in, n, l->cin, p + l->w_off, p + l->b_off, l->cout, out);
      break;
    default:
      g_assert_not_reached ();
    }
}

/* Layer @i's backward: @dy (gradient of its output) -> @dx (gradient of
 * its input [n, cin, h, w], overwritten; NULL: not wanted), parameter
 * gradients accumulated into @gp (NULL: not wanted), skip gradients into
 * @skip_grads[arg] for an add. @dx never aliases @dy. */
static void
layer_backward (const DdimConvNet *net, DdimConvNetTape *t, int i, const float *in, int n, int h,
                int w, const float *dy, float *dx, float *gp, float **skip_grads)
{
  const Layer *l = &net->layers[i];
  const float *p = net->params;
  gsize hw = (gsize) h * w, count = (gsize) n * l->cin * hw;
  float *dw = gp && l->w_off != NO_PARAM ? gp + l->w_off : NULL;
  float *db = gp && l->b_off != NO_PARAM ? gp + l->b_off : NULL;
  switch (l->kind)
    {
    case DDIM_CONVNET_CONV:
      if (dx || dw)
        ddim_conv2d_backward (in, n, l->cin, h, w, p + l->w_off, l->cout, 3, l->stride, 1, 1,
                              dy, dx, dw, db, &t->arena);
      break;
    case DDIM_CONVNET_GROUP_NORM:
      if (dx || dw)
        ddim_group_norm_backward (in, n, l->cin, (int) hw, l->arg, GN_EPS, p + l->w_off,
                                  p + l->b_off, FALSE, dy, dx, dw, db);
      break;
    case DDIM_CONVNET_SILU:
      if (dx)
        ddim_silu_backward (in, dy, dx, count);
      break;
    case DDIM_CONVNET_UPSAMPLE:
      if (dx)
        ddim_upsample_nearest2x_backward (dy, n, l->cin, h, w, dx);
      break;
    case DDIM_CONVNET_ADD:
      {
        float *sg = skip_grads[l->arg];
        for (gsize j = 0; j < count; j++)
          sg[j] += dy[j];
        if (dx)
          memcpy (dx, dy, count * sizeof (float));
      }
      break;
    case DDIM_CONVNET_POOL:
      if (dx)
        for (gsize pl = 0; pl < (gsize) n * l->cin; pl++)
          {
            float g = (float) (dy[pl] / (double) hw);
            for (gsize j = 0; j < hw; j++)
              dx[pl * hw + j] = g;
          }
      break;
    case DDIM_CONVNET_LINEAR:
      ddim_linear_backward (in, n, l->cin, p + l->w_off, l->cout, dy, dx, dw, db);
      break;
    default:
      g_assert_not_reached ();
    }
}

const float *
ddim_convnet_forward_tape (const DdimConvNet *net, DdimConvNetTape *t, const float *x, int n,
                           int height, int width, GError **error)
{
  g_return_val_if_fail (net != NULL && t != NULL && x != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  if (n < 1)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "the network needs at least one image");
      return NULL;
    }
  int L = net->n_layers;
  if (t->layers_cap < L)
    {
      t->offsets = g_renew (gsize, t->offsets, L);
      t->hs = g_renew (int, t->hs, L);
      t->ws = g_renew (int, t->ws, L);
      t->layers_cap = L;
    }
  t->n_layers = 0;
  if (!plan_sizes (net, height, width, t->hs, t->ws, error))
    return NULL;
  gsize total = 0;
  for (int i = 0; i < L; i++)
    {
      t->offsets[i] = total;
      total += (layer_count (&net->layers[i], n, t->hs[i], t->ws[i]) + 15) / 16 * 16;
    }
  if (total > t->acts_cap)
    {
      g_free (t->acts);
      t->acts = g_try_new (float, total);
      t->acts_cap = t->acts ? total : 0;
      if (t->acts == NULL)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                       "out of memory for the activations of %d images of %dx%d", n, width,
                       height);
          return NULL;
        }
    }
  gsize xn = (gsize) n * net->in_channels * height * width;
  if (xn > t->x_cap)
    {
      g_free (t->x);
      t->x = g_new (float, xn);
      t->x_cap = xn;
    }
  memcpy (t->x, x, xn * sizeof (float));
  t->n = n;
  t->h = height;
  t->w = width;
  const float *in = t->x;
  int h = height, w = width;
  for (int i = 0; i < L; i++)
    {
      float *out = t->acts + t->offsets[i];
      gsize mark = ddim_arena_mark (&t->arena);
      layer_forward (net, t, i, in, n, h, w, out);
      ddim_arena_release (&t->arena, mark);
      in = out;
      h = t->hs[i];
      w = t->ws[i];
    }
  ddim_arena_reset (&t->arena);
  t->n_layers = L;
  return in;
}

void
ddim_convnet_backward (const DdimConvNet *net, DdimConvNetTape *t, const float *dout,
                       float *grad_params, float *grad_x)
{
  g_return_if_fail (net != NULL && t != NULL && dout != NULL);
  g_return_if_fail (t->n_layers == net->n_layers);
  int L = net->n_layers, n = t->n;
  gsize max_count = (gsize) n * net->in_channels * t->h * t->w;
  for (int i = 0; i < L; i++)
    max_count = MAX (max_count, layer_count (&net->layers[i], n, t->hs[i], t->ws[i]));
  gsize mark = ddim_arena_mark (&t->arena);
  float *ga = ddim_arena_alloc (&t->arena, max_count);
  float *gb = ddim_arena_alloc (&t->arena, max_count);
  g_autofree float **skip = g_new0 (float *, L);
  for (int i = 0; i < L; i++)
    if (net->layers[i].skip_source)
      skip[i] = ddim_arena_alloc0 (&t->arena,
                                   layer_count (&net->layers[i], n, t->hs[i], t->ws[i]));
  gsize out_count = layer_count (&net->layers[L - 1], n, t->hs[L - 1], t->ws[L - 1]);
  memcpy (ga, dout, out_count * sizeof (float));
  for (int i = L - 1; i >= 0; i--)
    {
      const Layer *l = &net->layers[i];
      gsize cnt = layer_count (l, n, t->hs[i], t->ws[i]);
      if (skip[i])
        for (gsize j = 0; j < cnt; j++)
          ga[j] += skip[i][j];
      const float *in = i > 0 ? t->acts + t->offsets[i - 1] : t->x;
      int h = i > 0 ? t->hs[i - 1] : t->h, w = i > 0 ? t->ws[i - 1] : t->w;
      float *dx = i > 0 ? gb : grad_x;
      gsize m2 = ddim_arena_mark (&t->arena);
      layer_backward (net, t, i, in, n, h, w, ga, dx, grad_params, skip);
      ddim_arena_release (&t->arena, m2);
      float *tmp = ga;
      ga = gb;
      gb = tmp;
    }
  ddim_arena_release (&t->arena, mark);
  ddim_arena_reset (&t->arena);
}

gboolean
ddim_convnet_forward (const DdimConvNet *net, const float *x, int n, int height, int width,
                      float *out, GError **error)
{
  g_return_val_if_fail (net != NULL && x != NULL && out != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  int oh, ow;
  if (!ddim_convnet_output_size (net, height, width, &oh, &ow, error))
    return FALSE;
  gsize in_per = (gsize) net->in_channels * height * width;
  gsize out_per = (gsize) ddim_convnet_get_out_channels (net) * oh * ow;
  g_autoptr (DdimConvNetTape) t = ddim_convnet_tape_new ();
  for (int b = 0; b < n; b += INFER_CHUNK)
    {
      int m = MIN (INFER_CHUNK, n - b);
      const float *y = ddim_convnet_forward_tape (net, t, x + (gsize) b * in_per, m, height,
                                                  width, error);
      if (y == NULL)
        return FALSE;
      memcpy (out + (gsize) b * out_per, y, (gsize) m * out_per * sizeof (float));
    }
  return TRUE;
}

/* ---- training ---- */

struct _DdimConvNetTrainer {
  DdimConvNet      *net;
  DdimTrainOptions  opts;
  DdimConvNetTape  *tape;
  float            *grad, *m, *v;
  float            *dout;
  gsize             dout_cap;
  int               step;
};

DdimConvNetTrainer *
ddim_convnet_trainer_new (DdimConvNet *net, const DdimTrainOptions *options, GError **error)
{
  g_return_val_if_fail (net != NULL && options != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  if (!ddim_train_optimizer_options_check (options, error))
    return NULL;
  DdimConvNetTrainer *tr = g_new0 (DdimConvNetTrainer, 1);
  tr->net = net;
  tr->opts = *options;
  tr->opts.checkpoint_path = tr->opts.loss_csv_path = NULL;
  tr->opts.progress = NULL;
  tr->opts.progress_data = NULL;
  tr->opts.cancellable = NULL;
  tr->tape = ddim_convnet_tape_new ();
  gsize np = MAX (net->n_params, 1);
  tr->grad = g_new0 (float, np);
  tr->m = g_new0 (float, np);
  tr->v = g_new0 (float, np);
  return tr;
}

void
ddim_convnet_trainer_free (DdimConvNetTrainer *tr)
{
  if (tr == NULL)
    return;
  ddim_convnet_tape_free (tr->tape);
  g_free (tr->grad);
  g_free (tr->m);
  g_free (tr->v);
  g_free (tr->dout);
  g_free (tr);
}

int
ddim_convnet_trainer_get_step (DdimConvNetTrainer *tr)
{
  g_return_val_if_fail (tr != NULL, 0);
  return tr->step;
}

gboolean
ddim_convnet_trainer_step (DdimConvNetTrainer *tr, const float *x, int n, int height, int width,
                           DdimConvNetLossFunc loss_func, gpointer loss_data, double *loss_out,
                           GError **error)
{
  g_return_val_if_fail (tr != NULL && x != NULL && loss_func != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  DdimConvNet *net = tr->net;
  const float *out = ddim_convnet_forward_tape (net, tr->tape, x, n, height, width, error);
  if (out == NULL)
    return FALSE;
  int L = net->n_layers;
  gsize count = layer_count (&net->layers[L - 1], n, tr->tape->hs[L - 1], tr->tape->ws[L - 1]);
  if (count > tr->dout_cap)
    {
      g_free (tr->dout);
      tr->dout = g_new (float, count);
      tr->dout_cap = count;
    }
  double loss = NAN;
  if (!loss_func (out, tr->dout, count, &loss, loss_data, error))
    return FALSE;
  if (!isfinite (loss))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the loss is not finite at step %d (try a lower learning rate)",
                   tr->step + 1);
      return FALSE;
    }
  memset (tr->grad, 0, net->n_params * sizeof (float));
  ddim_convnet_backward (net, tr->tape, tr->dout, tr->grad, NULL);
  double gnorm = ddim_clip_grad_norm (tr->grad, net->n_params, tr->opts.grad_clip);
  if (!isfinite (gnorm))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the gradient is not finite at step %d (try a lower learning rate)",
                   tr->step + 1);
      return FALSE;
    }
  const DdimTrainOptions *o = &tr->opts;
  DdimAdamW adam = { ddim_train_lr_at (o, tr->step), o->beta1, o->beta2, o->adam_eps,
                     o->weight_decay };
  for (guint i = 0; i < net->n_tensors; i++)
    {
      const Tensor *t = &net->tensors[i];
      ddim_adamw_step (&adam, (gint64) tr->step + 1, net->params + t->offset,
                       tr->grad + t->offset, tr->m + t->offset, tr->v + t->offset, t->size,
                       t->decay);
    }
  tr->step++;
  if (loss_out)
    *loss_out = loss;
  return TRUE;
}

guint64
ddim_convnet_derive_seed (guint64 seed, guint64 stream, guint64 index)
{
  guint64 s = seed;
  s = splitmix (&s) ^ (stream * 0xd1b54a32d192ed03ULL);
  s = splitmix (&s) ^ (index * 0xaef17502108ef2d9ULL);
  return splitmix (&s);
}

void
ddim_convnet_batch_indices (guint64 seed, int n_items, int step, int batch, int *indices)
{
  g_return_if_fail (n_items > 0 && step >= 0 && batch >= 0 && (batch == 0 || indices != NULL));
  g_autofree int *perm = g_new (int, n_items);
  gint64 epoch = -1;
  for (int i = 0; i < batch; i++)
    {
      gint64 pos = (gint64) step * batch + i;
      if (pos / n_items != epoch)
        {
          epoch = pos / n_items;
          guint64 s = ddim_convnet_derive_seed (seed, 0x7065726dULL, (guint64) epoch);
          for (int k = 0; k < n_items; k++)
            perm[k] = k;
          for (int k = n_items - 1; k > 0; k--)
            {
              int j = (int) ((double) (splitmix (&s) >> 11) * (1.0 / 9007199254740992.0)
                             * (k + 1));
              int t = perm[k];
              perm[k] = perm[j];
              perm[j] = t;
            }
        }
      indices[i] = perm[pos % n_items];
    }
}

/* ---- files ---- */

static char *
config_to_json (const DdimConvNet *net)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "format");
  json_builder_add_string_value (b, CONVNET_FORMAT);
  json_builder_set_member_name (b, "version");
  json_builder_add_int_value (b, CONVNET_VERSION);
  json_builder_set_member_name (b, "in_channels");
  json_builder_add_int_value (b, net->in_channels);
  json_builder_set_member_name (b, "layers");
  json_builder_begin_array (b);
  for (int i = 0; i < net->n_layers; i++)
    {
      g_autofree char *s = layer_to_string (&net->layers[i]);
      json_builder_add_string_value (b, s);
    }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "metadata");
  json_builder_begin_object (b);
  g_autoptr (GList) keys = g_hash_table_get_keys (net->metadata);
  keys = g_list_sort (keys, (GCompareFunc) strcmp);
  for (GList *k = keys; k; k = k->next)
    {
      json_builder_set_member_name (b, k->data);
      json_builder_add_string_value (b, g_hash_table_lookup (net->metadata, k->data));
    }
  json_builder_end_object (b);
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  char *text = ddim_json_to_string (root, 2);
  char *with_nl = g_strconcat (text, "\n", NULL);
  g_free (text);
  return with_nl;
}

static gboolean
write_files (const DdimConvNet *net, const char *dir, gboolean f16, GError **error)
{
  g_autofree char *json = config_to_json (net);
  g_autofree char *cpath = g_build_filename (dir, DDIM_CONVNET_CONFIG_NAME, NULL);
  g_autoptr (GError) local = NULL;
  if (!g_file_set_contents (cpath, json, -1, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot write %s: %s", cpath,
                   local->message);
      return FALSE;
    }
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  for (guint i = 0; i < net->n_tensors; i++)
    {
      const Tensor *t = &net->tensors[i];
      if (f16)
        ddim_safetensors_writer_add_f16 (w, t->name, t->ndim, t->shape, net->params + t->offset);
      else
        ddim_safetensors_writer_add_f32 (w, t->name, t->ndim, t->shape, net->params + t->offset);
    }
  ddim_safetensors_writer_add_metadata (w, "format", "pt");
  g_autofree char *wpath = g_build_filename (dir, DDIM_CONVNET_WEIGHTS_NAME, NULL);
  return ddim_safetensors_writer_save (w, wpath, error);
}

static void
remove_folder (const char *dir)
{
  static const char *const files[] = { DDIM_CONVNET_CONFIG_NAME, DDIM_CONVNET_WEIGHTS_NAME };
  for (guint i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *p = g_build_filename (dir, files[i], NULL);
      g_unlink (p);
    }
  g_rmdir (dir);
}

/* Whether an existing @dir holds nothing but a network's files. */
static gboolean
check_replaceable (const char *dir, GError **error)
{
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "cannot write the network folder %s: a file of that name exists", dir);
      return FALSE;
    }
  g_autoptr (GError) local = NULL;
  g_autoptr (GDir) d = g_dir_open (dir, 0, &local);
  if (d == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read %s: %s", dir, local->message);
      return FALSE;
    }
  const char *name;
  while ((name = g_dir_read_name (d)))
    {
      g_autofree char *p = g_build_filename (dir, name, NULL);
      if ((g_str_equal (name, DDIM_CONVNET_CONFIG_NAME)
           || g_str_equal (name, DDIM_CONVNET_WEIGHTS_NAME))
          && !g_file_test (p, G_FILE_TEST_IS_DIR))
        continue;
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "refusing to replace %s: it holds '%s', which is not part of a network "
                   "folder (remove it or choose another folder)", dir, name);
      return FALSE;
    }
  return TRUE;
}

gboolean
ddim_convnet_check_output_dir (const char *dir, GError **error)
{
  g_return_val_if_fail (dir != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  g_autofree char *canon = g_canonicalize_filename (dir, NULL);
  g_autofree char *parent = g_path_get_dirname (canon);
  if (!g_file_test (parent, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "cannot write the network folder %s: %s does not exist or is not a folder",
                   dir, parent);
      return FALSE;
    }
  if (g_access (parent, W_OK | X_OK) != 0)
    {
      int e = errno;
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "cannot write the network folder %s: folder %s is not writable (%s)", dir,
                   parent, g_strerror (e));
      return FALSE;
    }
  return !g_file_test (canon, G_FILE_TEST_EXISTS) || check_replaceable (canon, error);
}

gboolean
ddim_convnet_save (const DdimConvNet *net, const char *dir, gboolean f16, GError **error)
{
  g_return_val_if_fail (net != NULL && dir != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  if (!ddim_convnet_check_output_dir (dir, error))
    return FALSE;
  g_autofree char *canon = g_canonicalize_filename (dir, NULL);
  g_autofree char *parent = g_path_get_dirname (canon);
  g_autofree char *base = g_path_get_basename (canon);
  gboolean exists = g_file_test (canon, G_FILE_TEST_EXISTS);
  g_autofree char *tmp_name = g_strdup_printf (".%s.tmp-XXXXXX", base);
  g_autofree char *tmp = g_build_filename (parent, tmp_name, NULL);
  if (g_mkdtemp_full (tmp, 0777) == NULL)
    {
      int e = errno;
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "cannot write the network folder %s: cannot create a folder in %s: %s", dir,
                   parent, g_strerror (e));
      return FALSE;
    }
  if (!write_files (net, tmp, f16, error))
    {
      remove_folder (tmp);
      return FALSE;
    }
  if (exists)
    {
      g_autofree char *old_name = g_strdup_printf (".%s.old-XXXXXX", base);
      g_autofree char *old = g_build_filename (parent, old_name, NULL);
      if (g_mkdtemp_full (old, 0777) == NULL || g_rename (canon, old) != 0)
        {
          int e = errno;
          g_rmdir (old);
          remove_folder (tmp);
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot replace %s: %s", dir,
                       g_strerror (e));
          return FALSE;
        }
      if (g_rename (tmp, canon) != 0)
        {
          int e = errno;
          g_rename (old, canon);
          remove_folder (tmp);
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot replace %s: %s", dir,
                       g_strerror (e));
          return FALSE;
        }
      remove_folder (old);
      return TRUE;
    }
  if (g_rename (tmp, canon) != 0)
    {
      int e = errno;
      remove_folder (tmp);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot create %s: %s", dir,
                   g_strerror (e));
      return FALSE;
    }
  return TRUE;
}

DdimConvNet *
ddim_convnet_load (const char *dir, GError **error)
{
  g_return_val_if_fail (dir != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  g_autofree char *cpath = g_build_filename (dir, DDIM_CONVNET_CONFIG_NAME, NULL);
  g_autofree char *wpath = g_build_filename (dir, DDIM_CONVNET_WEIGHTS_NAME, NULL);
  g_autofree char *text = NULL;
  g_autoptr (GError) local = NULL;
  if (!g_file_get_contents (cpath, &text, NULL, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read %s: %s", cpath,
                   local->message);
      return NULL;
    }
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonNode *root = NULL;
  if (json_parser_load_from_data (parser, text, -1, NULL))
    root = json_parser_get_root (parser);
  JsonObject *obj = root && JSON_NODE_HOLDS_OBJECT (root) ? json_node_get_object (root) : NULL;
  const char *fmt = obj ? json_object_get_string_member_with_default (obj, "format", NULL)
                        : NULL;
  if (fmt == NULL || !g_str_equal (fmt, CONVNET_FORMAT))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "%s is not a network config (a JSON object with format '%s')", cpath,
                   CONVNET_FORMAT);
      return NULL;
    }
  gint64 version = json_object_get_int_member_with_default (obj, "version", 0);
  if (version > CONVNET_VERSION)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "%s has version %" G_GINT64_FORMAT "; this ddim reads version %d", cpath,
                   version, CONVNET_VERSION);
      return NULL;
    }
  gint64 cin = json_object_get_int_member_with_default (obj, "in_channels", 0);
  JsonNode *ln = json_object_get_member (obj, "layers");
  if (version < 1 || cin < 1 || cin > 65536 || ln == NULL || !JSON_NODE_HOLDS_ARRAY (ln))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "%s: needs version, in_channels and a 'layers' array", cpath);
      return NULL;
    }
  JsonArray *la = json_node_get_array (ln);
  g_autoptr (GString) arch = g_string_new (NULL);
  for (guint i = 0; i < json_array_get_length (la); i++)
    {
      JsonNode *e = json_array_get_element (la, i);
      if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_STRING
          || strpbrk (json_node_get_string (e), ",;\n"))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "%s: layer %u is not a layer string", cpath, i);
          return NULL;
        }
      g_string_append_printf (arch, "%s%s", i ? ", " : "", json_node_get_string (e));
    }
  g_autoptr (DdimConvNet) net = ddim_convnet_new ((int) cin, arch->str, &local);
  if (net == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "%s: %s", cpath, local->message);
      return NULL;
    }
  JsonNode *mn = json_object_get_member (obj, "metadata");
  if (mn && JSON_NODE_HOLDS_OBJECT (mn))
    {
      JsonObject *mo = json_node_get_object (mn);
      g_autoptr (GList) members = json_object_get_members (mo);
      for (GList *m = members; m; m = m->next)
        {
          JsonNode *v = json_object_get_member (mo, m->data);
          if (JSON_NODE_HOLDS_VALUE (v) && json_node_get_value_type (v) == G_TYPE_STRING)
            ddim_convnet_set_metadata (net, m->data, json_node_get_string (v));
        }
    }
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (wpath, error);
  if (st == NULL)
    return NULL;
  for (guint i = 0; i < net->n_tensors; i++)
    {
      const Tensor *t = &net->tensors[i];
      const DdimTensorInfo *info = ddim_safetensors_lookup (st, t->name);
      gboolean same = info != NULL && info->ndim == t->ndim;
      for (int d = 0; same && d < t->ndim; d++)
        same = info->shape[d] == t->shape[d];
      if (!same)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                       info ? "%s: tensor '%s' does not have the shape the config implies"
                            : "%s: tensor '%s' is missing", wpath, t->name);
          return NULL;
        }
      if (!ddim_tensor_info_to_f32 (info, net->params + t->offset, error))
        return NULL;
    }
  return g_steal_pointer (&net);
}

DdimConvNet *
ddim_convnet_load_kind (const char *dir, const char *kind, const char *what, GError **error)
{
  g_return_val_if_fail (dir != NULL && kind != NULL && what != NULL, NULL);
  g_autoptr (DdimConvNet) net = ddim_convnet_load (dir, error);
  if (net == NULL)
    return NULL;
  const char *found = ddim_convnet_get_metadata (net, "kind");
  if (found == NULL || !g_str_equal (found, kind))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "%s is not %s (its config.json metadata has kind '%s', not '%s')", dir, what,
                   found ? found : "(none)", kind);
      return NULL;
    }
  return g_steal_pointer (&net);
}

gboolean
ddim_convnet_get_metadata_int (const DdimConvNet *net, const char *key, int min, int max, int *out,
                               GError **error)
{
  g_return_val_if_fail (net != NULL && key != NULL && out != NULL && min >= 0, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  const char *s = ddim_convnet_get_metadata (net, key);
  guint64 v;
  if (s == NULL || !g_ascii_string_to_unsigned (s, 10, (guint64) min, (guint64) max, &v, NULL))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "the config.json metadata has no valid '%s' (an integer from %d to %d)", key,
                   min, max);
      return FALSE;
    }
  *out = (int) v;
  return TRUE;
}
