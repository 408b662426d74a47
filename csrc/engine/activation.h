// transformers' activations (activations.py) on float arrays, for the engine's MLP and the training block's, and
// their derivatives for the training block's backward.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "engine/config.h"

namespace dt {

// The constants of transformers' activations (activations.py): gelu = x/2 (1 + erf(x / sqrt 2)); gelu_new =
// x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); quick_gelu = x sigmoid(1.702 x).
inline constexpr float kInvSqrt2 = 0.70710678118654752f, kSqrt2OverPi = 0.79788456080286536f;
inline constexpr float kGeluCubic = 0.044715f, kQuickGeluScale = 1.702f;

inline void activate(float* x, int64_t n, Activation a) {
  switch (a) {
    case Activation::Relu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
      break;
    case Activation::Gelu:
      for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
      break;
    case Activation::GeluTanh:
      for (int64_t i = 0; i < n; ++i)
        x[i] = 0.5f * x[i] * (1.0f + std::tanh(kSqrt2OverPi * (x[i] + kGeluCubic * x[i] * x[i] * x[i])));
      break;
    case Activation::QuickGelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-kQuickGeluScale * x[i]));
      break;
    case Activation::Silu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
      break;
    case Activation::Tanh:
      for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
      break;
    case Activation::Sigmoid:
      for (int64_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
      break;
  }
}

// d act(x) / dx.
inline float activation_derivative(Activation a, float x) {
  const auto sigmoid = [](float v) { return 1.0f / (1.0f + std::exp(-v)); };
  switch (a) {
    case Activation::Relu: return x > 0.0f ? 1.0f : 0.0f;
    case Activation::Gelu:
      return 0.5f * (1.0f + std::erf(x * kInvSqrt2)) + x * 0.39894228040143268f * std::exp(-0.5f * x * x);
    case Activation::GeluTanh: {
      const float t = std::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
      return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * x * x);
    }
    case Activation::QuickGelu: {
      const float g = sigmoid(kQuickGeluScale * x);
      return g + kQuickGeluScale * x * g * (1.0f - g);
    }
    case Activation::Silu: {
      const float g = sigmoid(x);
      return g + x * g * (1.0f - g);
    }
    case Activation::Tanh: {
      const float t = std::tanh(x);
      return 1.0f - t * t;
    }
    case Activation::Sigmoid: {
      const float g = sigmoid(x);
      return g * (1.0f - g);
    }
  }
  return 0.0f;
}

// transformers' activation_function name (config.json) as an Activation; throws naming `source` if unknown.
Activation parse_activation(const std::string& name, const std::string& source);

}  // namespace dt
