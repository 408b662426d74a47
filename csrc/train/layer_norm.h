// LayerNorm in training on CPU, forward and backward, each one pass over the rows split among the team's
// threads; the backward sums the weight and bias gradients per thread, then adds the threads' sums.
#pragma once

#include <cstdint>

#include "train/context.h"

namespace dt {

// y = (x - mean) / sqrt(var + eps) * w + b per row of x [rows, n] (biased variance, as torch); mean and rstd
// [rows] are saved for the backward.
void layer_norm_forward(TrainContext& ctx, const float* x, const float* w, const float* b, float* y, float* mean,
                        float* rstd, int64_t rows, int n, float eps);

// dx [rows, n], dw and db [n] from dy [rows, n] and the forward's x, w, mean, rstd.
void layer_norm_backward(TrainContext& ctx, const float* dy, const float* x, const float* w, const float* mean,
                         const float* rstd, float* dx, float* dw, float* db, int64_t rows, int n);

}  // namespace dt
