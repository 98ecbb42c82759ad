/* Training a UNet2DModel from scratch: noise-prediction (or v-prediction)
 * MSE with uniformly drawn timesteps, AdamW with linear warm-up and cosine
 * decay, global-norm gradient clipping, an EMA of the weights, atomic
 * checkpoints with exact resume, and export as a diffusers model folder. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/config.h"
#include "ddim/dataset.h"
#include "ddim/schedule.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

/* Called after each optimisation step with the number of steps done (from
 * 1), the target step count of the current run and the step's loss. */
typedef void (*DdimTrainProgressFunc) (int step, int total, double loss, gpointer user_data);

typedef struct {
  int           batch_size;       /* images per step */
  int           steps;            /* length of the run; sets the lr schedule */
  double        lr;               /* peak learning rate */
  int           warmup_steps;     /* linear warm-up from lr/warmup to lr */
  double        lr_min_ratio;     /* cosine decay ends at lr * lr_min_ratio */
  double        weight_decay;     /* AdamW's decoupled decay (see ddim_adamw_step) */
  double        beta1, beta2, adam_eps;
  double        grad_clip;        /* max global L2 norm of the gradient; <= 0: none */
  double        ema_decay;        /* 0: the EMA follows the weights exactly */
  gboolean      ema_warmup;       /* decay min(ema_decay, (1+k)/(10+k)) as diffusers */
  gboolean      hflip;            /* random horizontal flips */
  guint64       seed;             /* initialisation and every random draw */
  DdimPrediction prediction;      /* epsilon or v_prediction */
  int           checkpoint_every; /* 0: no periodic checkpoints */
  const char   *checkpoint_path;  /* where periodic checkpoints go (copied) */
  const char   *loss_csv_path;    /* step,loss,lr,grad_norm,seconds (copied); NULL: none */
  DdimTrainProgressFunc progress;
  gpointer      progress_data;
  GCancellable *cancellable;      /* checked before each step */
  /* Data-parallel shards of each batch, one thread each (BLAS single-
   * threaded meanwhile); 0: one per processor. The gradient is summed in
   * shard order, so results are exact for a given count (resume with the
   * same one). Not part of checkpoints. */
  int           threads;
} DdimTrainOptions;

/* Defaults: batch 64, 10000 steps, lr 2e-4, warm-up 500, floor 0 (cosine to
 * zero), weight decay 0, Adam 0.9 / 0.999 / 1e-8, clip 1.0, EMA 0.9999
 * with warm-up, no flips, seed 0, epsilon, no checkpoints, no CSV. */
void ddim_train_options_init (DdimTrainOptions *options);
/* Checks the optimiser part (steps, lr schedule, AdamW, clipping):
 * DDIM_ERROR_INVALID naming the first bad field. */
gboolean ddim_train_optimizer_options_check (const DdimTrainOptions *options, GError **error);

/* ---- optimiser pieces (adamw.c) ---- */

/* Learning rate of optimisation step @step (0-based): linear warm-up
 * lr * (step+1)/warmup_steps for the first warmup_steps steps, then
 * lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2 with lr_min = lr *
 * lr_min_ratio and p = (step - warmup_steps) / (steps - warmup_steps)
 * (diffusers' cosine schedule with a floor; p is capped at 1, so steps
 * beyond @steps stay at lr_min). */
double ddim_train_lr_at (const DdimTrainOptions *options, int step);

typedef struct {
  double lr, beta1, beta2, eps, weight_decay;
} DdimAdamW;

/* One AdamW update (PyTorch's torch.optim.AdamW, amsgrad off) of @n
 * parameters at step @t (1-based, for the bias corrections):
 *   p -= lr * wd * p            (only when @decay)
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
 * The trainer passes @decay = FALSE for 1-D tensors (biases and
 * GroupNorm scales/shifts), TRUE for conv and linear weights. */
void   ddim_adamw_step (const DdimAdamW *adam, gint64 t, float *param, const float *grad,
                        float *m, float *v, gsize n, gboolean decay);

/* Global L2 norm of @grad (accumulated in double, in order); when
 * @max_norm > 0 and the norm exceeds it, scales @grad by
 * max_norm / (norm + 1e-6) as torch.nn.utils.clip_grad_norm_. Returns the
 * norm before clipping. */
double ddim_clip_grad_norm (float *grad, gsize n, double max_norm);

/* EMA decay used for update number @n_updates (1-based), as diffusers'
 * EMAModel: k = n_updates - 1; 0 when k == 0, else min(decay, (1+k)/(10+k))
 * with @warmup, or @decay without. */
double ddim_ema_decay_at (double decay, gboolean warmup, gint64 n_updates);
/* ema = decay * ema + (1 - decay) * param. */
void   ddim_ema_update (float *ema, const float *param, gsize n, double decay);

/* ---- the trainer (trainer.c) ---- */

typedef struct _DdimTrainer DdimTrainer;

/* PyTorch's default initialisation, from the parameter table, seeded:
 * conv and linear weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming
 * uniform with a = sqrt(5)), their biases U(-1/sqrt(fan_in), ..) with the
 * weight's fan_in, GroupNorm weights 1 and biases 0. */
void ddim_train_init_params (DdimUNet *unet, guint64 seed);

/* A fresh trainer: weights from ddim_train_init_params (seed), EMA equal
 * to them, Adam moments zero, step 0. @schedule gives the noise levels; the
 * saved scheduler config takes its prediction type from @options. Errors:
 * DDIM_ERROR_INVALID for bad options (named), DDIM_ERROR_UNSUPPORTED when
 * in_channels != out_channels or the prediction is "sample". */
DdimTrainer *ddim_trainer_new (const DdimUNetConfig *config, const DdimSchedule *schedule,
                               const DdimTrainOptions *options, GError **error);

/* What a checkpoint was made with: its model config, noise schedule
 * (caller frees), options (strings and callbacks left NULL) and step count.
 * Any out parameter may be NULL. */
gboolean ddim_train_checkpoint_info (const char *path, DdimUNetConfig *config,
                                     DdimSchedule **schedule, DdimTrainOptions *options,
                                     int *step, GError **error);

/* A trainer restored from @checkpoint_path: weights, EMA, Adam moments,
 * step count and training time. The checkpoint must have been made with
 * the same @config and schedule (else DDIM_ERROR_MISMATCH naming the first
 * differing field) and the same seed, batch size, prediction and flips
 * (else DDIM_ERROR_MISMATCH naming the option), because these decide the
 * data stream. Other options (lr, steps, ...) are taken from @options; with
 * the same ones, a resumed run gives exactly the result of an uninterrupted
 * one (at the same BLAS thread count). */
DdimTrainer *ddim_trainer_resume (const char *checkpoint_path, const DdimUNetConfig *config,
                                  const DdimSchedule *schedule,
                                  const DdimTrainOptions *options, GError **error);
void         ddim_trainer_free (DdimTrainer *trainer);

/* Trains until @until_step steps are done (nothing when already there).
 * Step s (0-based) uses only (seed, s): its batch (a seeded permutation of
 * the dataset per epoch), noise, timesteps t ~ U{0..T-1} and flips. Loss:
 * mean over all elements of (model(x_t, t) - target)^2 with
 * x_t = sqrt(a_t) x0 + sqrt(1-a_t) eps and target eps, or
 * v = sqrt(a_t) eps - sqrt(1-a_t) x0. Writes the CSV row, calls the progress
 * callback and writes a checkpoint every checkpoint_every steps.
 * The dataset must match the model (channels = in_channels,
 * size = sample_size) and, after a resume, have the size the checkpoint
 * was trained on. A non-finite loss stops the run before the update
 * (DDIM_ERROR_INVALID); a cancelled run stops before the next step
 * (DDIM_ERROR_CANCELLED). Either way the trainer holds the state after the
 * last completed step. */
gboolean ddim_trainer_run (DdimTrainer *trainer, const DdimDataset *dataset, int until_step,
                           GError **error);

/* A safetensors file (written atomically) with F32 tensors "param.NAME",
 * "ema.NAME", "adam_m.NAME" and "adam_v.NAME" for every parameter, and
 * metadata format = "ddim-train-checkpoint", version, step, seconds,
 * dataset_size, config (config.json), scheduler (scheduler_config.json)
 * and options (JSON). */
gboolean ddim_trainer_save_checkpoint (DdimTrainer *trainer, const char *path, GError **error);

/* Checks that @out_dir can be written by ddim_trainer_save_model: its
 * parent folder exists and is writable, and @out_dir is absent, or a
 * folder holding nothing but what a model folder has (config.json,
 * diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json,
 * scheduler_config.json), which is then replaced. Anything else is an
 * error (DDIM_ERROR_IO, or DDIM_ERROR_INVALID for a folder with other
 * files) naming the path. */
gboolean ddim_train_check_output_dir (const char *out_dir, GError **error);

/* Writes a diffusers model folder: config.json (ddim_unet_config_to_json),
 * diffusion_pytorch_model.safetensors (every parameter under its diffusers
 * name, sorted by name as safetensors' torch writer orders them, F32 or
 * F16, metadata {"format": "pt"}) and scheduler/scheduler_config.json.
 * With @use_ema the EMA weights are written, else the live ones. Atomic:
 * the folder is built as a hidden temporary sibling and renamed into place;
 * an existing model folder is renamed aside first and removed last. */
gboolean ddim_trainer_save_model (DdimTrainer *trainer, const char *out_dir, gboolean use_ema,
                                  gboolean f16, GError **error);

/* Steps done so far. */
int                 ddim_trainer_get_step (DdimTrainer *trainer);
/* Training time so far (seconds, across resumes). */
double              ddim_trainer_get_seconds (DdimTrainer *trainer);
/* The live model and a model holding the EMA weights (owned by the
 * trainer; valid until it is freed; not to be used during a run). */
DdimUNet           *ddim_trainer_get_unet (DdimTrainer *trainer);
DdimUNet           *ddim_trainer_get_ema_unet (DdimTrainer *trainer);
/* The schedule, with the trainer's prediction type. */
const DdimSchedule *ddim_trainer_get_schedule (DdimTrainer *trainer);
const DdimTrainOptions *ddim_trainer_get_options (DdimTrainer *trainer);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimTrainer, ddim_trainer_free)

G_END_DECLS
