// Attention probabilities of GPT-2 in training mode on CPU: the masked softmax of scaled scores followed by
// dropout, forward and backward in one pass per row each. The dropout mask is dropout_mask(p, seed) over the
// flat [batch, heads, tq, tk] index, so it equals nn.Dropout's distribution and is redrawn from the seed alone.
#pragma once

#include <cstdint>

namespace dt {

// probs = softmax over the keys j with mask[b, i, j] (or j <= i when mask is null and tq == tk) of
// scale * scores, a row with no such key all zero (as torch's SDPA); out = probs * dropout mask.
// scores, probs, out: [batch, heads, tq, tk]; mask: [batch, tq, tk] bytes, nonzero = may attend, or null.
void softmax_dropout_forward(const float* scores, const uint8_t* mask, float* probs, float* out, int64_t batch,
                             int64_t heads, int64_t tq, int64_t tk, float scale, float p, uint64_t seed);

// grad_scores = scale * (grad_out * out - probs * sum_j grad_out * out), row by row: the gradient of the
// forward above through softmax and dropout. All arrays: [rows, t]; grad_scores may alias grad_out.
void softmax_dropout_backward(const float* grad_out, const float* probs, const float* out, float* grad_scores,
                              int64_t rows, int64_t t, float scale);

}  // namespace dt
