// Dropout masks from a counter-based hash: any element's draw depends only on (seed, index), so generation is
// branch-free, vectorisable and reproducible. torch's CPU bernoulli_ draws from a sequential Mersenne
// Twister, which costs a fifth of a Decision Transformer training step on two cores.
#pragma once

#include <cstdint>

namespace dt {

// out[i] = scale if uniform(seed, i) >= p else 0, with scale = 1 / (1 - p); out: [n] floats.
// uniform(seed, i) is the top 24 bits of a two-round 32-bit integer hash of i keyed by seed, over 2^24.
void dropout_mask(float* out, int64_t n, float p, uint64_t seed);

}  // namespace dt
