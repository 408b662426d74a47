// The model's Linear layers in training on CPU, forward and backward, on the engine's packed matmul
// (engine/kernels.h matmul_packed) with the epilogue in the same pass over each block of rows, while the block is
// still in cache. The three products and how each is laid out for the kernel (weights change every step, so
// every call packs what it needs):
//   forward  y  = x w^T + b   in = x (rows of tokens), w^T packed in panels from w (N, K)
//   backward dx = g w         in = g (the output gradient after the epilogue's), w packed in panels as it lies
//   backward dw = g^T x       reduced over the M = batch x tokens rows of g and x, block of rows by block of rows
//                             in the same pass as dx (train/kernels.h matmul_tn: g read as it lies, x packed in
//                             panels), while both are in cache
// The M rows are cut in parts of a fixed number of blocks (whatever the thread count); each part's dw is one sum
// over its rows in order, and the parts' results are added in order at the end, so that the bits do not depend on
// which thread took which part. M x N < 2^32 (the dropout mask's flat index is 32 bits).
#pragma once

#include <cstdint>

#include "train/context.h"

namespace dt {

enum class Epilogue {
  kNone,        // y = x w^T + b
  kRelu,        // y = max(x w^T + b, 0)
  kDropoutAdd,  // y = residual + (x w^T + b) * dropout_mask(p, seed) over the flat index of y
};

// x: [M, K] with leading dimension ldx; w: [N, K]; b: [N] or null; y: [M, N]; residual: [M, N] (kDropoutAdd).
void linear_forward(TrainContext& ctx, const float* x, int64_t ldx, const float* w, const float* b, float* y, int64_t M,
                    int K, int N, Epilogue epilogue, const float* residual, float p, uint64_t seed);

// dy: [M, N], the gradient of y; y: the forward's output (kRelu), else unused. Writes dx [M, K] (unless null),
// dw [N, K] and db [N] (unless null). The residual's gradient (kDropoutAdd) is dy itself.
void linear_backward(TrainContext& ctx, const float* dy, const float* x, int64_t ldx, const float* w, const float* y,
                     float* dx, float* dw, float* db, int64_t M, int K, int N, Epilogue epilogue, float p,
                     uint64_t seed);

}  // namespace dt
