// Integer hashes for counter-based random numbers: a draw is a hash of its counters, so it is the same whatever
// thread or batch layout computes it. Users: dropout masks (train/dropout.h) and the engine's sampled actions
// (engine/sampling.h), each with its Python reference (dt_fast/train_ops/dropout.py, dt_fast/distributions.py).
#pragma once

#include <cstdint>

namespace dt {

// lowbias32 (Chris Wellons' hash-prospector): a full-avalanche 32-bit integer hash.
inline uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

}  // namespace dt
