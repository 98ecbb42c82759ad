/* A small sequential convolutional network: the layers the Fashion-MNIST
 * classifier (classifier.h) and the learned inversion encoder (encoder.h)
 * are made of, with a forward pass that keeps its activations on a tape, a
 * backward pass (parameter gradients and, when asked, the input gradient),
 * PyTorch's default initialisation, an AdamW trainer step and a model
 * folder (config.json + model.safetensors) written atomically.
 *
 * Architecture description: layers separated by ',' ';' or new lines, each
 * one of
 *   conv C        3x3 convolution to C channels, stride 1, padding 1
 *   conv C s2     the same with stride 2 (output ceil(h/2) x ceil(w/2))
 *   gn G          group normalisation in G groups (eps 1e-5, affine)
 *   silu          x * sigmoid(x)
 *   up            nearest-neighbour 2x upsampling
 *   add K         adds the output of layer K (0-based, earlier, same shape):
 *                 a skip connection
 *   pool          global average pooling: [C, H, W] -> [C]
 *   linear F      fully connected to F features (after pool or linear)
 * e.g. "conv 32, gn 8, silu, conv 64 s2, gn 8, silu, pool, linear 10".
 * The input is [n, in_channels, H, W]; the output is [n, C, H', W'] for a
 * network ending in spatial layers, [n, F] after pool or linear.
 *
 * Tensors are planar float32 (NCHW). Parameters live in one flat array in
 * layer order (per layer: weight, then bias; for gn: scale, then shift),
 * named "layers.I.weight" / "layers.I.bias" as a PyTorch nn.Sequential. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/train.h"

G_BEGIN_DECLS

typedef enum {
  DDIM_CONVNET_CONV,
  DDIM_CONVNET_GROUP_NORM,
  DDIM_CONVNET_SILU,
  DDIM_CONVNET_UPSAMPLE,
  DDIM_CONVNET_ADD,
  DDIM_CONVNET_POOL,
  DDIM_CONVNET_LINEAR
} DdimConvNetLayerKind;

typedef struct _DdimConvNet DdimConvNet;

/* A network for inputs of @in_channels channels with the layers @arch
 * describes (see above), parameters zero (call ddim_convnet_init_params).
 * Errors: DDIM_ERROR_INVALID naming the layer (unknown kind, a missing or
 * bad number, groups that do not divide the channels, an add of a later
 * layer or of another channel count, a conv or pool after pool/linear, a
 * linear before pool, an empty description). */
DdimConvNet *ddim_convnet_new (int in_channels, const char *arch, GError **error);
void         ddim_convnet_free (DdimConvNet *net);

int          ddim_convnet_get_in_channels (const DdimConvNet *net);
/* The description, normalised (one layer per entry, ", " between them). */
char        *ddim_convnet_get_arch (const DdimConvNet *net);
int          ddim_convnet_get_n_layers (const DdimConvNet *net);
DdimConvNetLayerKind ddim_convnet_get_layer_kind (const DdimConvNet *net, int layer);
/* Channels (or features) of the output. */
int          ddim_convnet_get_out_channels (const DdimConvNet *net);
/* TRUE when the output is [n, F] (the network has pool or linear). */
gboolean     ddim_convnet_is_flat (const DdimConvNet *net);

gsize        ddim_convnet_get_n_params (const DdimConvNet *net);
float       *ddim_convnet_get_params (DdimConvNet *net);
/* Parameter tensors in layer order: name, shape and data (into the flat
 * array). @index < ddim_convnet_get_n_tensors. */
guint        ddim_convnet_get_n_tensors (const DdimConvNet *net);
const char  *ddim_convnet_get_tensor (const DdimConvNet *net, guint index, int *ndim,
                                      gint64 shape[4], gsize *offset);

/* PyTorch's default initialisation, seeded: conv and linear weights and
 * biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming uniform, a = sqrt(5)),
 * group-norm scales 1 and shifts 0. */
void         ddim_convnet_init_params (DdimConvNet *net, guint64 seed);

/* Output size for an input of @height x @width: *out_height and *out_width are
 * 1 for a flat output. Fails (DDIM_ERROR_INVALID) for a size the network
 * cannot take (a skip whose shapes differ after strided convolutions and
 * upsampling: the size must be a multiple of 2^downsamplings). */
gboolean     ddim_convnet_output_size (const DdimConvNet *net, int height, int width,
                                       int *out_height, int *out_width, GError **error);

/* String metadata saved with the network (config.json "metadata"). */
void         ddim_convnet_set_metadata (DdimConvNet *net, const char *key, const char *value);
/* Borrowed; NULL when absent. */
const char  *ddim_convnet_get_metadata (const DdimConvNet *net, const char *key);
/* Metadata @key as an integer in [min, max] (min >= 0); FALSE with a
 * DDIM_ERROR_FORMAT (naming the key, not the folder) when it is missing or
 * not such a number. */
gboolean    ddim_convnet_get_metadata_int (const DdimConvNet *net, const char *key, int min, int max,
                                           int *out, GError **error);

/* ---- forward and backward ---- */

/* The activations of one forward pass, for its backward, and the scratch
 * both use. A tape belongs to one thread at a time; a network (const) can
 * be used by several tapes at once. */
typedef struct _DdimConvNetTape DdimConvNetTape;

DdimConvNetTape *ddim_convnet_tape_new (void);
void             ddim_convnet_tape_free (DdimConvNetTape *tape);

/* Runs @net on x [n, in_channels, height, width], keeping every layer's
 * output on @tape. Returns the output (owned by the tape, valid until its
 * next forward), NULL on a size the network cannot take. */
const float *ddim_convnet_forward_tape (const DdimConvNet *net, DdimConvNetTape *tape,
                                        const float *x, int n, int height, int width,
                                        GError **error);

/* Backward of the tape's last forward (made with @net): @dout is the
 * gradient of the output. @grad_params (ddim_convnet_get_n_params floats)
 * is ACCUMULATED; @grad_x [n, in_channels, height, width] is OVERWRITTEN.
 * Either may be NULL (not wanted). */
void         ddim_convnet_backward (const DdimConvNet *net, DdimConvNetTape *tape,
                                    const float *dout, float *grad_params, float *grad_x);

/* Inference: out = net(x), in chunks of at most 64 images (bounded
 * memory). @out: n * (output size) floats. */
gboolean     ddim_convnet_forward (const DdimConvNet *net, const float *x, int n, int height,
                                   int width, float *out, GError **error);

/* ---- training ---- */

/* Writes the loss of output @out (@count floats: the batch's whole output)
 * to *loss and its gradient to @dout (overwritten). Returning FALSE (with
 * @error set) stops the step before any update. */
typedef gboolean (*DdimConvNetLossFunc) (const float *out, float *dout, gsize count,
                                         double *loss, gpointer data, GError **error);

/* AdamW on a network's parameters with the schedule of DdimTrainOptions:
 * used are lr, warmup_steps, steps, lr_min_ratio (ddim_train_lr_at),
 * weight_decay (conv and linear weights only), beta1, beta2, adam_eps and
 * grad_clip (ddim_clip_grad_norm); batch_size, seed, progress and
 * cancellable are left to the caller's loop; EMA, prediction, flips and
 * checkpoints are ignored. */
typedef struct _DdimConvNetTrainer DdimConvNetTrainer;

/* Errors: DDIM_ERROR_INVALID for bad options (named). The trainer borrows
 * @net, which must outlive it. */
DdimConvNetTrainer *ddim_convnet_trainer_new (DdimConvNet *net, const DdimTrainOptions *options,
                                              GError **error);
void                ddim_convnet_trainer_free (DdimConvNetTrainer *trainer);

/* One optimisation step on batch x [n, in_channels, height, width]:
 * forward, @loss_func, backward, clipping, AdamW at the step's learning
 * rate. *loss (may be NULL) receives the loss. A non-finite loss or
 * gradient is DDIM_ERROR_INVALID (no update). */
gboolean            ddim_convnet_trainer_step (DdimConvNetTrainer *trainer, const float *x, int n,
                                               int height, int width,
                                               DdimConvNetLossFunc loss_func, gpointer loss_data,
                                               double *loss, GError **error);
/* Steps done. */
int                 ddim_convnet_trainer_get_step (DdimConvNetTrainer *trainer);

/* Seeded batches: the @batch item indices of optimisation step @step
 * (0-based) in an endless stream of per-epoch permutations of 0..n_items-1
 * (epoch e shuffled with a generator seeded from (@seed, e)), so every
 * item comes once per epoch and step s depends on (seed, s) only. */
void    ddim_convnet_batch_indices (guint64 seed, int n_items, int step, int batch,
                                    int *indices);
/* A seed for draw @index of random stream @stream, derived from @seed
 * (splitmix64), for the callers' own seeded draws. */
guint64 ddim_convnet_derive_seed (guint64 seed, guint64 stream, guint64 index);

/* ---- files ---- */

/* Writes @dir: config.json ({"format": "ddim-convnet", "version": 1,
 * "in_channels", "layers": [...], "metadata": {...}}) and model.safetensors
 * (the tensors "layers.I.weight"/"layers.I.bias", F32 or F16). Atomic: the
 * folder is built as a hidden sibling and renamed into place; an existing
 * folder holding only those two files is replaced. An existing folder with
 * anything else, or an existing file, is an error (DDIM_ERROR_INVALID,
 * resp. DDIM_ERROR_IO), as is a missing parent folder (DDIM_ERROR_IO). */
gboolean     ddim_convnet_save (const DdimConvNet *net, const char *dir, gboolean f16,
                                GError **error);
/* The checks ddim_convnet_save makes before writing, to fail early. */
gboolean     ddim_convnet_check_output_dir (const char *dir, GError **error);

/* Loads a folder written by ddim_convnet_save. Errors name the file:
 * DDIM_ERROR_IO (missing), DDIM_ERROR_FORMAT (not a convnet config, bad
 * JSON, a bad architecture), DDIM_ERROR_UNSUPPORTED (a newer version),
 * DDIM_ERROR_MISMATCH (a tensor missing or of another shape). */
DdimConvNet *ddim_convnet_load (const char *dir, GError **error);
/* ddim_convnet_load, then a DDIM_ERROR_FORMAT unless the metadata "kind" is
 * @kind; @what names such a network in that error ("an inversion
 * encoder"). */
DdimConvNet *ddim_convnet_load_kind (const char *dir, const char *kind, const char *what,
                                     GError **error);

/* The file names inside a network folder. */
#define DDIM_CONVNET_CONFIG_NAME "config.json"
#define DDIM_CONVNET_WEIGHTS_NAME "model.safetensors"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimConvNet, ddim_convnet_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimConvNetTape, ddim_convnet_tape_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimConvNetTrainer, ddim_convnet_trainer_free)

G_END_DECLS
