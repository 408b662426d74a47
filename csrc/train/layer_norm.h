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

// Rows of x that a block also uses as its residual: rows whose index within each run of `tokens` rows is start,
// start + step, ... (every row: tokens = rows, start 0, step 1); `count` of them per run.
struct ResidualRows {
  int64_t tokens;
  int start, step, count;
};

// dx [rows, n], dw and db [n] from dy [rows, n] and the forward's x, w, mean, rstd; plus, when dres is not null,
// the gradient of the residual (the rows `res` of x, [rows / tokens * count, n]) added into its rows of dx.
void layer_norm_backward(TrainContext& ctx, const float* dy, const float* x, const float* w, const float* mean,
                         const float* rstd, float* dx, float* dw, float* db, int64_t rows, int n, const float* dres,
                         const ResidualRows& res);

}  // namespace dt
