#include "train/epilogue.h"

#include <cstring>

#include "common/check.h"
#include "train/dropout.h"

namespace dt {

namespace {

void check_shape(const char* who, int64_t rows, int64_t cols) {
  DT_CHECK(rows >= 0 && cols >= 0, who, ": negative shape (", rows, ", ", cols, ")");
}

void check_dropout(const char* who, int64_t rows, int64_t cols, float p) {
  check_shape(who, rows, cols);
  DT_CHECK(p >= 0.0f && p < 1.0f, who, ": p must be in [0, 1), got ", p);
  DT_CHECK(rows * cols < (int64_t{1} << 32), who, ": at most 2^32 elements, got ", rows * cols);
}

// max(v, 0) through the sign bit: an integer select, which vectorises under -ftrapping-math.
inline float relu(float v) {
  int32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= ~(bits >> 31);
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// g where out > 0 (as a signed integer, so +0 and negatives give 0), else 0.
inline float relu_grad(float g, float out) {
  int32_t o, b;
  std::memcpy(&o, &out, sizeof o);
  std::memcpy(&b, &g, sizeof b);
  b &= -static_cast<int32_t>(o > 0);
  std::memcpy(&g, &b, sizeof g);
  return g;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void relu_rows(float* __restrict y, const float* __restrict bias, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = y + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] = relu(row[c] + bias[c]);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void relu_grad_rows(const float* grad, const float* __restrict out, float* grad_in, float* __restrict grad_bias,
                    int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = grad + r * cols;
    const float* o = out + r * cols;
    float* gi = grad_in + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = relu_grad(g[c], o[c]);
      gi[c] = v;
      grad_bias[c] += v;
    }
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void dropout_add_rows(const float* y, const float* __restrict bias, const float* residual, float* out, int64_t rows,
                      int64_t cols, DropoutKey key) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint32_t first = static_cast<uint32_t>(r * cols);
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      out[i] = residual[i] + (y[i] + bias[c]) * dropout_value(key, first + static_cast<uint32_t>(c));
    }
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void dropout_grad_rows(const float* grad, float* grad_y, float* __restrict grad_bias, int64_t rows, int64_t cols,
                       DropoutKey key) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint32_t first = static_cast<uint32_t>(r * cols);
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      const float v = grad[i] * dropout_value(key, first + static_cast<uint32_t>(c));
      grad_y[i] = v;
      grad_bias[c] += v;
    }
  }
}

}  // namespace

void bias_relu_forward(float* y, const float* bias, int64_t rows, int64_t cols) {
  check_shape("bias_relu_forward", rows, cols);
  relu_rows(y, bias, rows, cols);
}

void bias_relu_backward(const float* grad, const float* out, float* grad_in, float* grad_bias, int64_t rows,
                        int64_t cols) {
  check_shape("bias_relu_backward", rows, cols);
  std::memset(grad_bias, 0, sizeof(float) * cols);
  relu_grad_rows(grad, out, grad_in, grad_bias, rows, cols);
}

void bias_dropout_add_forward(const float* y, const float* bias, const float* residual, float* out, int64_t rows,
                              int64_t cols, float p, uint64_t seed) {
  check_dropout("bias_dropout_add_forward", rows, cols, p);
  dropout_add_rows(y, bias, residual, out, rows, cols, dropout_key(p, seed, 0));
}

void bias_dropout_add_backward(const float* grad, float* grad_y, float* grad_bias, int64_t rows, int64_t cols,
                               float p, uint64_t seed) {
  check_dropout("bias_dropout_add_backward", rows, cols, p);
  std::memset(grad_bias, 0, sizeof(float) * cols);
  dropout_grad_rows(grad, grad_y, grad_bias, rows, cols, dropout_key(p, seed, 0));
}

}  // namespace dt
