/* Noise schedules and timestep selection of DDPM/DDIM schedulers
 * (diffusers scheduler_config.json). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  DDIM_BETA_LINEAR,
  DDIM_BETA_SCALED_LINEAR,
  DDIM_BETA_SQUAREDCOS_CAP_V2
} DdimBetaSchedule;

typedef enum {
  DDIM_PREDICT_EPSILON,
  DDIM_PREDICT_V,
  DDIM_PREDICT_SAMPLE
} DdimPrediction;

typedef enum {
  DDIM_SPACING_LEADING,
  DDIM_SPACING_TRAILING,
  DDIM_SPACING_LINSPACE
} DdimSpacing;

/* How the cumulative alphas are computed from the betas, as each family's
 * own code does (the values differ in the last float32 bits). */
typedef enum {
  DDIM_ALPHAS_FLOAT32,        /* diffusers: float32 betas (torch.linspace) and products */
  DDIM_ALPHAS_FLOAT64_BETAS,  /* ermongroup: float64 np.linspace rounded to float32 betas,
                               * products accumulated in double (torch CPU cumprod) */
  DDIM_ALPHAS_FLOAT64         /* guided-diffusion: numpy float64 throughout, rounded last */
} DdimAlphasArithmetic;

typedef struct {
  int              num_train_timesteps;
  double           beta_start, beta_end;
  DdimBetaSchedule beta_schedule;
  DdimPrediction   prediction;
  DdimSpacing      spacing;            /* the config's default spacing */
  int              steps_offset;
  gboolean         set_alpha_to_one;
  gboolean         clip_sample;        /* used by sampling only, never by inversion */
  double           clip_sample_range;
  float           *alphas_cumprod;     /* [num_train_timesteps], float32 as diffusers */
  /* scheduler_config.json: "ddim_alphas_arithmetic" ("float32",
   * "float64-betas", "float64"), written only when not float32. */
  DdimAlphasArithmetic arithmetic;
  /* The model also predicts a variance that DDIM ignores (guided-diffusion
   * learn_sigma); "variance_type": "learned_range" as diffusers writes it. */
  gboolean         learned_variance;
} DdimSchedule;

/* Parses a DDPMScheduler/DDIMScheduler config with diffusers' defaults
 * (1000 steps, linear 1e-4..0.02, epsilon, leading, offset 0,
 * set_alpha_to_one true), plus "ddim_alphas_arithmetic" and
 * "variance_type" (see DdimSchedule). Unsupported values (trained_betas,
 * another beta schedule, thresholding) are DDIM_ERROR_UNSUPPORTED naming
 * the field. */
DdimSchedule *ddim_schedule_parse (const char *json, gssize length, GError **error);
DdimSchedule *ddim_schedule_load (const char *path, GError **error);
/* The default schedule of DDPM checkpoints, for configs without a file. */
DdimSchedule *ddim_schedule_new_default (void);
/* A schedule of another family: DDPM's defaults with these betas and
 * arithmetic (alphas computed). */
DdimSchedule *ddim_schedule_new_betas (DdimBetaSchedule beta_schedule, double beta_start,
                                       double beta_end, int num_train_timesteps,
                                       DdimAlphasArithmetic arithmetic);
/* Recomputes alphas_cumprod after fields changed. */
void          ddim_schedule_update (DdimSchedule *schedule);
DdimSchedule *ddim_schedule_copy (const DdimSchedule *schedule);
void          ddim_schedule_free (DdimSchedule *schedule);
/* scheduler_config.json as diffusers' DDIMScheduler writes it. */
char         *ddim_schedule_to_json (const DdimSchedule *schedule);

/* Cumulative alpha at @t; t < 0 gives the "final" value (1 with
 * set_alpha_to_one, else alphas_cumprod[0]). */
float ddim_schedule_alpha (const DdimSchedule *schedule, int t);

/* The @n_steps sampling timesteps in descending order, exactly as
 * DDIMScheduler.set_timesteps (g_free). Errors when n_steps is not in
 * 1..num_train_timesteps. */
int  *ddim_schedule_timesteps (const DdimSchedule *schedule, int n_steps, DdimSpacing spacing,
                               GError **error);
/* The distance diffusers steps back from each timestep: T / n_steps. */
int   ddim_schedule_step_ratio (const DdimSchedule *schedule, int n_steps);

const char *ddim_spacing_to_string (DdimSpacing spacing);
gboolean    ddim_spacing_from_string (const char *s, DdimSpacing *spacing, GError **error);
const char *ddim_prediction_to_string (DdimPrediction prediction);
const char *ddim_beta_schedule_to_string (DdimBetaSchedule schedule);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimSchedule, ddim_schedule_free)

G_END_DECLS
