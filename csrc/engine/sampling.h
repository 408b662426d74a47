// Sampled actions of a stochastic Decision Transformer (the Online Decision Transformer's tanh-Gaussian head):
// action = tanh(loc + exp(log_std) * z), loc the action head's output before its tanh, log_std the log-std head's
// output squashed into [kLogStdMin, kLogStdMax], z standard normal noise from a counter-based generator: draw
// `draw` of row `row` under `seed` is a function of (seed, row, draw, action dimension) alone. The reference is
// dt_fast/distributions.py (bounded_log_std, TanhNormal.sample, normal_noise, whose docstring gives the recipe);
// the float operations here are the same, in the same order.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hash.h"

namespace dt {

// ODT's log_std_bounds (facebookresearch/online-dt; LOG_STD_MIN / LOG_STD_MAX of dt_fast/distributions.py).
constexpr float kLogStdMin = -5.0f, kLogStdMax = 2.0f;
// 2 pi as Python's 2.0 * math.pi: the double nearest pi, doubled (exact).
constexpr double kTwoPi = 2.0 * 3.14159265358979323846;

// The counter of draw `draw` of row `row` under `seed` (row and draw taken modulo 2^32); every dimension's two
// uniforms hash from it.
inline uint32_t noise_counter(uint64_t seed, uint64_t row, uint64_t draw) {
  const uint32_t key = hash32(static_cast<uint32_t>(seed) ^ hash32(static_cast<uint32_t>(seed >> 32) + 0x9E3779B9U));
  const uint32_t row_key = hash32(key ^ hash32(static_cast<uint32_t>(row) + 0x85EBCA6BU));
  return hash32(row_key ^ hash32(static_cast<uint32_t>(draw) + 0xC2B2AE35U));
}

// Dimension j of the standard normal noise of `counter`: Box-Muller on two 24-bit uniforms (u1 in (0, 1], u2 in
// [0, 1)) in double, rounded once to float.
inline float normal_noise(uint32_t counter, uint32_t j) {
  const double u1 = static_cast<double>((hash32(counter ^ (2 * j)) >> 8) + 1) / 16777216.0;
  const double u2 = static_cast<double>(hash32(counter ^ (2 * j + 1)) >> 8) / 16777216.0;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2));
}

// tanh(loc + exp(log_std) * z) with log_std = kLogStdMin + (kLogStdMax - kLogStdMin) / 2 (tanh(raw) + 1), raw the
// log-std head's output.
inline float tanh_normal_sample(float loc, float raw, float z) {
  const float log_std = kLogStdMin + 0.5f * (kLogStdMax - kLogStdMin) * (std::tanh(raw) + 1.0f);
  return std::tanh(loc + std::exp(log_std) * z);
}

}  // namespace dt
