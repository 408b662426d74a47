#include "train/dropout.h"

#include "common/check.h"

namespace dt {

namespace {

// lowbias32 (Chris Wellons' hash-prospector): a full-avalanche 32-bit integer hash.
inline uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// One block of at most 2^32 elements; compiled for AVX2 and baseline x86-64, picked at load time.
__attribute__((target_clones("avx2", "default")))
void mask_block(float* dst, int64_t count, uint32_t key_lo, uint32_t key, uint32_t threshold, float scale) {
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t h = hash32(hash32(static_cast<uint32_t>(i) ^ key_lo) + key);
    dst[i] = (h >> 8) >= threshold ? scale : 0.0f;
  }
}

}  // namespace

void dropout_mask(float* out, int64_t n, float p, uint64_t seed) {
  DT_CHECK(n >= 0, "dropout_mask: n must be >= 0, got ", n);
  DT_CHECK(p >= 0.0f && p < 1.0f, "dropout_mask: p must be in [0, 1), got ", p);
  const uint32_t key_lo = static_cast<uint32_t>(seed);
  const uint32_t threshold = static_cast<uint32_t>(static_cast<double>(p) * (1u << 24) + 0.5);
  const float scale = 1.0f / (1.0f - p);
  constexpr int64_t kBlock = int64_t{1} << 32;  // past 2^32 elements the counter wraps: re-key each block
  for (int64_t base = 0; base < n; base += kBlock) {
    const uint32_t key = static_cast<uint32_t>(seed >> 32) ^ hash32(static_cast<uint32_t>(base >> 32) + 0x9e3779b9U);
    mask_block(out + base, n - base < kBlock ? n - base : kBlock, key_lo, key, threshold, scale);
  }
}

}  // namespace dt
