// GPT-2's causal self-attention in training on CPU for short windows (3K tokens), forward and backward, one
// (batch row, head) at a time, split among the team's threads. Per head and block of 6 queries, over only the keys
// from the block's first allowed to its last: scores = q k^T (keys transposed once per head), probs = masked
// softmax of scale * scores, out = probs * dropout mask, y = out v. Only probs is saved (with each query's span of
// keys): the backward recomputes no softmax but redraws the dropout mask from its seed for out, over the forward's
// span per query, and its products over queries (dv = out^T dy, dk = ds^T q) read out and ds in place, transposed
// by strides (train/kernels.h matmul_strided). The keys a query may attend come from a byte mask, or, without one,
// are the run from its batch row's first valid key to the query's own token (causal with left padding: no mask to
// build, copy or scan). The dropout mask is dropout_mask(p, seed) over the flat [batch, heads, tq, tk] index, so
// it equals nn.Dropout's distribution; a query with no key to attend gets zero probabilities (as torch's SDPA),
// and a zero gradient.
#pragma once

#include <cstdint>

#include "train/context.h"

namespace dt {

// Where the heads lie: rows of tokens with leading dimensions; head h has columns [h * hs, (h + 1) * hs) of q,
// k, v (each pointer already at its first column). Batch row b of q starts at b * tq * ldq, of k and v at
// b * tk * ldk.
struct AttentionLayout {
  int64_t batch;
  int heads, tq, tk, hs;
  int ldq, ldk;  // leading dimensions of q (and dq), of k and v (and dk, dv)
};

// The keys each query may attend. mask not null: [batch, tq, tk] bytes, nonzero = may attend. Else query i of
// batch row b attends the keys j with start[b] <= j <= query_first + i * query_step (start null: from 0), the
// token of query i, which the caller keeps below tk.
struct AttentionKeys {
  const uint8_t* mask;
  const int32_t* start;
  int query_first, query_step;
};

// probs: [batch, heads, tq, tk]; y: [batch, tq, heads * hs]; spans: [batch, tq, 2] ints, the keys [lo, hi) from
// each query's first allowed to its last (0, 0 if none), for the backward.
void attention_forward(TrainContext& ctx, const float* q, const float* k, const float* v, const AttentionKeys& keys,
                       const AttentionLayout& s, float scale, float p, uint64_t seed, float* probs, float* y,
                       int32_t* spans);

// dq, dk, dv (laid out as q, k, v) from dy [batch, tq, heads * hs] and the forward's saved probs and spans, its
// dropout mask redrawn from (p, seed).
void attention_backward(TrainContext& ctx, const float* dy, const float* q, const float* k, const float* v,
                        const float* probs, const int32_t* spans, const AttentionLayout& s, float scale, float p,
                        uint64_t seed, float* dq, float* dk, float* dv);

}  // namespace dt
