// Epilogues of the model's Linear layers in training on CPU: what follows the matmul (bias, ReLU, dropout,
// residual add) in one pass forward, and in one pass backward together with the bias gradient (the column
// sums), so that no separate bias broadcast, activation, mask or reduction pass touches memory.
// Every array is row-major [rows, cols] except bias and grad_bias, [cols].
#pragma once

#include <cstdint>

namespace dt {

// y = max(y + bias, 0), in place (a NaN input gives 0 or NaN by its sign bit).
void bias_relu_forward(float* y, const float* bias, int64_t rows, int64_t cols);

// grad_in = grad where out > 0 else 0; grad_bias = column sums of grad_in. grad_in may alias grad.
void bias_relu_backward(const float* grad, const float* out, float* grad_in, float* grad_bias, int64_t rows,
                        int64_t cols);

// out = residual + (y + bias) * mask, the mask of dropout_mask(p, seed) over the flat index; out may alias y.
void bias_dropout_add_forward(const float* y, const float* bias, const float* residual, float* out, int64_t rows,
                              int64_t cols, float p, uint64_t seed);

// grad_y = grad * mask (the forward's); grad_bias = column sums of grad_y. grad_y may alias grad.
void bias_dropout_add_backward(const float* grad, float* grad_y, float* grad_bias, int64_t rows, int64_t cols,
                               float p, uint64_t seed);

}  // namespace dt
