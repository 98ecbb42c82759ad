/* Learning-based inversion: an encoder E(x0) -> x_T, a small fully
 * convolutional network (convnet.h, down/up with skips) trained for one
 * model, one step count K and one spacing on pairs (x_T, x0) with
 * x_T ~ N(0, I) (seeded) and x0 the K-step deterministic DDIM decoding of
 * x_T (eta 0, no clipping, the decoder of ddim reconstruct), minimising
 * mean((E(x0) - x_T)^2). One forward pass inverts an image; the result is
 * a DDIM latent (inversion method "encoder") or the start of the
 * optimisation ("hybrid"; see exact.h).
 *
 * On disk: a folder (by default MODEL/encoder) with config.json and
 * model.safetensors (ddim_convnet_save), whose metadata records kind
 * "ddim-encoder", channels, size (the model's sample_size it was trained
 * at), ddim_steps, spacing, model_sha256 (of the model's weights file) and
 * the training settings and losses. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/convnet.h"
#include "ddim/sampler.h"
#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

/* The default network for @C channels: full resolution 32 channels,
 * two stride-2 levels of 64, and back up with skip additions:
 *   conv 32, gn 8, silu, conv 64 s2, gn 8, silu, conv 64 s2, gn 8, silu,
 *   conv 64, gn 8, silu, up, conv 64, add 5, gn 8, silu,
 *   up, conv 32, add 2, gn 8, silu, conv C
 * Image sizes must be multiples of 4. */
char *ddim_encoder_default_arch (int channels);

/* The folder name beside a model's files: MODEL/encoder. */
#define DDIM_ENCODER_DIR_NAME "encoder"

typedef struct _DdimEncoder DdimEncoder;

/* Called while the training pairs are made (pairs done, total) and after
 * every optimisation step (step, total, loss). */
typedef void (*DdimEncoderPairsFunc) (int done, int total, gpointer user_data);

typedef struct {
  int         ddim_steps;     /* K of the decoding (>= 1) */
  DdimSpacing spacing;
  int         size;           /* pair size (a multiple of 4); 0: the model's sample_size */
  int         pairs;          /* training pairs, made once (a pool; >= 1) */
  int         val_pairs;      /* held-out pairs for the validation MSE (>= 1) */
  int         steps;          /* optimisation steps (>= 0) */
  int         batch_size;     /* pairs per step (>= 1) */
  double      lr;             /* peak learning rate, cosine decay to 0 */
  int         warmup_steps;
  double      weight_decay;
  double      grad_clip;      /* <= 0: none */
  guint64     seed;           /* pairs, initialisation, batches */
  const char *arch;           /* NULL: ddim_encoder_default_arch */
  int         sample_batch;   /* images per ddim_sample call while making pairs (>= 1) */
  DdimEncoderPairsFunc  pairs_progress;
  DdimTrainProgressFunc progress;
  gpointer    progress_data;  /* for both callbacks */
  GCancellable *cancellable;  /* checked per sampling step and per optimisation step */
} DdimEncoderTrainOptions;

/* Defaults: K = 20 with the schedule's spacing (@schedule may be NULL:
 * leading), the model's size, 2048 pairs, 64 held-out pairs, 3000 steps
 * of batch 32, lr 1e-3, warm-up 100, no weight decay, clip 1.0, seed 0,
 * the default network, sampling 16 images at a time. */
void ddim_encoder_train_options_init (DdimEncoderTrainOptions *options,
                                      const DdimSchedule *schedule);

typedef struct {
  double val_mse_initial;   /* held-out MSE of the initialised network */
  double val_mse_final;     /* held-out MSE after training */
  double train_loss_final;  /* mean loss of the last min(100, steps) steps */
  double pair_seconds;      /* making the pairs (training and held-out) */
  double train_seconds;     /* the optimisation */
  int    model_evals;       /* UNet evaluations for the pairs (per image) */
} DdimEncoderTrainStats;

/* Makes the pairs with @unet / @schedule and trains a new encoder for
 * them, recording @model_sha256 (the hex SHA-256 of the model's weights
 * file; DdimModel.weights_sha256). @stats may be NULL. Errors:
 * DDIM_ERROR_INVALID (bad options, named; a size the model or network
 * cannot take), DDIM_ERROR_CANCELLED, and a non-finite loss. */
DdimEncoder *ddim_encoder_train (DdimUNet *unet, const DdimSchedule *schedule,
                                 const char *model_sha256,
                                 const DdimEncoderTrainOptions *options,
                                 DdimEncoderTrainStats *stats, GError **error);
void         ddim_encoder_free (DdimEncoder *encoder);

/* Writes the encoder folder (atomic; see ddim_convnet_save). */
gboolean     ddim_encoder_save (const DdimEncoder *encoder, const char *dir, gboolean f16,
                                GError **error);
/* Loads an encoder folder. When @expected_sha256 is not NULL, an encoder
 * made for another model is DDIM_ERROR_MISMATCH ("... was trained for
 * another model ..."). A network folder that is not an encoder is
 * DDIM_ERROR_FORMAT; otherwise errors as ddim_convnet_load. */
DdimEncoder *ddim_encoder_load (const char *dir, const char *expected_sha256, GError **error);

/* x_T [n, C, height, width] = E(x0 [n, C, height, width]), each sample
 * scaled onto the shell |x_T| = sqrt(C * height * width) where Gaussian
 * latents lie (the MSE-trained network's raw output is shorter). @height and
 * @width must be multiples of 4 (DDIM_ERROR_INVALID otherwise). Safe to
 * call from several threads at once. */
gboolean     ddim_encoder_encode (const DdimEncoder *encoder, const float *x0, int n, int height,
                                  int width, float *x_T, GError **error);

int          ddim_encoder_get_channels (const DdimEncoder *encoder);
/* The step count and spacing it was trained for. */
int          ddim_encoder_get_steps (const DdimEncoder *encoder);
DdimSpacing  ddim_encoder_get_spacing (const DdimEncoder *encoder);
/* The image size it was trained at. */
int          ddim_encoder_get_size (const DdimEncoder *encoder);
const char  *ddim_encoder_get_model_sha256 (const DdimEncoder *encoder);
const DdimConvNet *ddim_encoder_get_net (const DdimEncoder *encoder);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimEncoder, ddim_encoder_free)

G_END_DECLS
