// Dropout masks from a counter-based hash: any element's draw depends only on (seed, index), so generation is
// branch-free, vectorisable and reproducible, and a backward pass can redraw the forward's mask instead of
// storing it. torch's CPU bernoulli_ draws from a sequential Mersenne Twister, which costs a fifth of a
// Decision Transformer training step on two cores.
#pragma once

#include <cstdint>

#include "common/hash.h"

namespace dt {

class TrainContext;

// The keys of one block of 2^32 mask elements: element `i` of the block keeps with value `scale`.
struct DropoutKey {
  uint32_t lo;         // low half of the seed
  uint32_t hi;         // high half of the seed mixed with the block number
  uint32_t threshold;  // p in units of 2^-24
  float scale;         // 1 / (1 - p)
};

// Key of elements [block * 2^32, (block + 1) * 2^32) of the mask drawn with (p, seed); p in [0, 1).
DropoutKey dropout_key(float p, uint64_t seed, uint64_t block);

// Mask value of element `i` of a block: `scale` if uniform(seed, i) >= p else 0, where uniform is the top
// 24 bits of a two-round hash of i over 2^24.
inline float dropout_value(const DropoutKey& k, uint32_t i) {
  const uint32_t h = hash32(hash32(i ^ k.lo) + k.hi);
  return (h >> 8) >= k.threshold ? k.scale : 0.0f;
}

// out[i] = dropout mask value i (one element at a time: the reference of the vector kernels); out: [n] floats.
void dropout_mask(float* out, int64_t n, float p, uint64_t seed);

// out = (x + shift) * mask over a (rows, cols) matrix, shift (cols) added to every row, the mask that of
// dropout_mask(p, seed) over the flat index (rows * cols <= 2^32); out may alias x.
void shift_dropout_forward(TrainContext& ctx, const float* x, const float* shift, float* out, int64_t rows, int cols,
                           float p, uint64_t seed);

// Its gradients from dy: dx = dy * mask, dshift = the column sums of dx (summed in fixed blocks of rows, added in
// order: the same bits on any number of threads); dx may alias dy.
void shift_dropout_backward(TrainContext& ctx, const float* dy, float* dx, float* dshift, int64_t rows, int cols,
                            float p, uint64_t seed);

}  // namespace dt
