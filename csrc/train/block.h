// A pre-norm GPT-2 block in one call each way, the ops of layer_norm.h, linear.h and attention.h in turn:
//   x1  = residual + dropout(attn_proj(attention(c_attn(ln_1(x)))))     residual = x at the query tokens
//   out = x1 + dropout(mlp_proj(act(c_fc(ln_2(x1)))))
// at every token, or with queries at some tokens only (the last block of an action-only forward: keys and values of
// every token, everything after the attention at the queries' rows). One call instead of a dozen from Python: the
// work between the calls (autograd, tensor wrappers, arguments), run on one core on caches the ops had just filled,
// was a sixth of a training step.
#pragma once

#include <cstdint>

#include "engine/config.h"
#include "train/attention.h"
#include "train/context.h"

namespace dt {

struct BlockShape {
  int64_t batch;
  int tokens, width, inner, heads;  // T, C, the MLP's hidden width, attention heads
  bool all_tokens;                  // queries at every token, else at query_first + i * query_step, i < queries
  int query_first, query_step, queries;
  float scale, attn_p, resid_p, eps_1, eps_2;
  uint64_t attn_seed, proj_seed, mlp_seed;  // of the dropout masks of the probabilities, attn_proj and mlp_proj
  Activation act;                           // of the MLP (engine/config.h); ReLU fused into c_fc
};

// Parameters as in GPT-2's state_dict (Linear weights (out, in)); the gradients have the same layout.
struct BlockWeights {
  const float *ln_1_w, *ln_1_b, *c_attn_w, *c_attn_b, *attn_proj_w, *attn_proj_b;
  const float *ln_2_w, *ln_2_b, *c_fc_w, *c_fc_b, *mlp_proj_w, *mlp_proj_b;
};
struct BlockGrads {
  float *ln_1_w, *ln_1_b, *c_attn_w, *c_attn_b, *attn_proj_w, *attn_proj_b;
  float *ln_2_w, *ln_2_b, *c_fc_w, *c_fc_b, *mlp_proj_w, *mlp_proj_b;
};

// What the forward writes and the backward reads; N = batch x T rows, M = batch x queries rows.
struct BlockSaved {
  float *h1, *mean1, *rstd1;  // ln_1: (N, C), (N), (N)
  float* qkv;            // every token: c_attn's output (N, 3C); else the queries (M, C), then keys and values (N, 2C)
  float *hq, *residual;  // queries at some tokens only: ln_1's and x's rows of the queries (M, C) each
  float* probs;          // (batch, heads, queries, T)
  int32_t* spans;        // (batch, queries, 2)
  float *y, *x1, *h2, *mean2, *rstd2;  // (M, C), (M, C), (M, C), (M), (M)
  float *pre, *f;                      // c_fc's output and act of it (M, inner); one array for ReLU
};

// x: (batch, T, C); out: (batch, queries, C) (queries = T with all_tokens).
void block_forward(TrainContext& ctx, const float* x, const AttentionKeys& keys, const BlockShape& s,
                   const BlockWeights& w, const BlockSaved& saved, float* out);

// dout: the gradient of out; writes every gradient of g and dx (batch, T, C).
void block_backward(TrainContext& ctx, const float* dout, const float* x, const BlockShape& s, const BlockWeights& w,
                    const BlockSaved& saved, const BlockGrads& g, float* dx);

}  // namespace dt
