// AdamW (torch.optim.AdamW's update: decoupled weight decay, bias-corrected moments) over every parameter tensor
// of a model in one call, with the gradient-norm clip of torch.nn.utils.clip_grad_norm_ folded in: one parallel
// pass sums the squares of every gradient (fixed blocks added in a fixed order: the same bits on any number of
// threads), then one updates every parameter with its gradient times the clip coefficient.
#pragma once

#include <cstdint>
#include <vector>

#include "train/context.h"

namespace dt {

// One parameter tensor of n floats: its gradient, moments and step count (each updated in place; the step count
// incremented first, as torch.optim.AdamW does).
struct AdamWTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t n;
  float* step;
};

struct AdamWOptions {
  float lr, beta1, beta2, eps, weight_decay;
  float max_grad_norm;  // clip the gradients' global 2-norm to this; <= 0: no clip
};

// One step over every tensor; returns the gradients' global 2-norm before clipping.
double adamw_step(TrainContext& ctx, const std::vector<AdamWTensor>& tensors, const AdamWOptions& options);

}  // namespace dt
