/* libddim: DDIM inversion, reconstruction and editing for diffusers
 * UNet2DModel checkpoints. One header for everything public. */
#pragma once

#include "ddim/error.h"
#include "ddim/safetensors.h"
#include "ddim/image.h"
#include "ddim/config.h"
#include "ddim/unet.h"
#include "ddim/schedule.h"
#include "ddim/sampler.h"
#include "ddim/model.h"
#include "ddim/latent.h"
#include "ddim/exact.h"
#include "ddim/optimize.h"
#include "ddim/dataset.h"
#include "ddim/train.h"
#include "ddim/directions.h"
#include "ddim/edit.h"
#include "ddim/fit.h"
#include "ddim/discover.h"
#include "ddim/interpolate.h"
