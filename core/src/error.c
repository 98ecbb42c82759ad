#include "ddim/error.h"

G_DEFINE_QUARK (ddim-error-quark, ddim_error)
