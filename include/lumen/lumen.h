/* lumen.h - the umbrella header: include this to use all of liblumen. */
#ifndef LUMEN_H
#define LUMEN_H

#include "lumen/analysis.h"
#include "lumen/base.h"
#include "lumen/format.h"
#include "lumen/model.h"
#include "lumen/sae.h"
#include "lumen/tensor.h"
#include "lumen/tokenizer.h"
#include "lumen/train.h"

#define LUMEN_VERSION "0.1.0"

#endif
