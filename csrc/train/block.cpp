#include "train/block.h"

#include <algorithm>

#include "common/check.h"
#include "engine/activation.h"
#include "train/layer_norm.h"
#include "train/linear.h"

namespace dt {

namespace {

constexpr int64_t kRowsPerChunk = 64;  // rows per chunk of the row-wise passes (gather, scatter, activation)

// The row of token i's query in a (batch x T) matrix: queries at every token, or spaced.
int64_t query_row(const BlockShape& s, int64_t r) {
  const int64_t b = r / s.queries, i = r % s.queries;
  return b * s.tokens + s.query_first + i * s.query_step;
}

// dst (M, C) = the query rows of src (N, C).
void gather_queries(TrainContext& ctx, const BlockShape& s, const float* src, float* dst) {
  const int64_t M = s.batch * s.queries;
  ctx.parallel((M + kRowsPerChunk - 1) / kRowsPerChunk, [&](int64_t c, int) {
    for (int64_t r = c * kRowsPerChunk; r < std::min(M, (c + 1) * kRowsPerChunk); ++r)
      std::copy_n(src + query_row(s, r) * s.width, s.width, dst + r * s.width);
  });
}

// The query rows of dst (N, C) += src (M, C).
void scatter_add_queries(TrainContext& ctx, const BlockShape& s, const float* src, float* dst) {
  const int64_t M = s.batch * s.queries;
  ctx.parallel((M + kRowsPerChunk - 1) / kRowsPerChunk, [&](int64_t c, int) {
    for (int64_t r = c * kRowsPerChunk; r < std::min(M, (c + 1) * kRowsPerChunk); ++r) {
      float* d = dst + query_row(s, r) * s.width;
      const float* a = src + r * s.width;
      for (int j = 0; j < s.width; ++j) d[j] += a[j];
    }
  });
}

// f = act(pre) (forward), or df *= act'(pre) (backward), over M rows of `inner` columns.
void activation_pass(TrainContext& ctx, const BlockShape& s, const float* pre, float* f, bool backward) {
  const int64_t M = s.batch * s.queries;
  ctx.parallel((M + kRowsPerChunk - 1) / kRowsPerChunk, [&](int64_t c, int) {
    const int64_t begin = c * kRowsPerChunk * s.inner, end = std::min(M, (c + 1) * kRowsPerChunk) * s.inner;
    if (backward) {
      for (int64_t i = begin; i < end; ++i) f[i] *= activation_derivative(s.act, pre[i]);
    } else {
      std::copy(pre + begin, pre + end, f + begin);
      activate(f + begin, end - begin, s.act);
    }
  });
}

AttentionLayout attention_layout(const BlockShape& s) {
  const int C = s.width;
  return {s.batch, s.heads, s.queries, s.tokens, C / s.heads, s.all_tokens ? 3 * C : C, s.all_tokens ? 3 * C : 2 * C};
}

}  // namespace

void block_forward(TrainContext& ctx, const float* x, const AttentionKeys& keys, const BlockShape& s,
                   const BlockWeights& w, const BlockSaved& v, float* out) {
  DT_CHECK(s.batch >= 0 && s.tokens >= 1 && s.width >= 1 && s.inner >= 1 && s.heads >= 1 && s.width % s.heads == 0,
           "block_forward: bad shape");
  DT_CHECK(s.all_tokens ? s.queries == s.tokens
                        : (s.queries >= 1 && s.query_first >= 0 && s.query_step >= 1 &&
                           s.query_first + int64_t{s.queries - 1} * s.query_step < s.tokens),
           "block_forward: the queries' tokens must lie among the T = ", s.tokens, " tokens");
  const int C = s.width;
  const int64_t N = s.batch * s.tokens, M = s.batch * s.queries;
  FamilyClock clock(ctx);
  layer_norm_forward(ctx, x, w.ln_1_w, w.ln_1_b, v.h1, v.mean1, v.rstd1, N, C, s.eps_1);
  clock.charge(TrainContext::kElementwise);
  const AttentionLayout layout = attention_layout(s);
  const float *q = v.qkv, *k = v.qkv + C, *residual = x;
  if (s.all_tokens) {
    linear_forward(ctx, v.h1, C, w.c_attn_w, w.c_attn_b, v.qkv, N, C, 3 * C, Epilogue::kNone, nullptr, 0.0f, 0);
    clock.charge(TrainContext::kGemm);
  } else {  // the queries' rows of c_attn's first C outputs; keys and values (its other 2C) of every token
    float* kv = v.qkv + M * C;
    gather_queries(ctx, s, v.h1, v.hq);
    gather_queries(ctx, s, x, v.residual);
    clock.charge(TrainContext::kElementwise);
    linear_forward(ctx, v.hq, C, w.c_attn_w, w.c_attn_b, v.qkv, M, C, C, Epilogue::kNone, nullptr, 0.0f, 0);
    linear_forward(ctx, v.h1, C, w.c_attn_w + int64_t{C} * C, w.c_attn_b + C, kv, N, C, 2 * C, Epilogue::kNone, nullptr,
                   0.0f, 0);
    clock.charge(TrainContext::kGemm);
    k = kv;
    residual = v.residual;
  }
  attention_forward(ctx, q, k, k + C, keys, layout, s.scale, s.attn_p, s.attn_seed, v.probs, v.y, v.spans);
  clock.charge(TrainContext::kAttention);
  linear_forward(ctx, v.y, C, w.attn_proj_w, w.attn_proj_b, v.x1, M, C, C, Epilogue::kDropoutAdd, residual, s.resid_p,
                 s.proj_seed);
  clock.charge(TrainContext::kGemm);
  layer_norm_forward(ctx, v.x1, w.ln_2_w, w.ln_2_b, v.h2, v.mean2, v.rstd2, M, C, s.eps_2);
  clock.charge(TrainContext::kElementwise);
  const bool relu = s.act == Activation::Relu;
  linear_forward(ctx, v.h2, C, w.c_fc_w, w.c_fc_b, v.pre, M, C, s.inner, relu ? Epilogue::kRelu : Epilogue::kNone,
                 nullptr, 0.0f, 0);
  clock.charge(TrainContext::kGemm);
  if (!relu) activation_pass(ctx, s, v.pre, v.f, false);
  clock.charge(TrainContext::kElementwise);
  linear_forward(ctx, v.f, s.inner, w.mlp_proj_w, w.mlp_proj_b, out, M, s.inner, C, Epilogue::kDropoutAdd, v.x1,
                 s.resid_p, s.mlp_seed);
  clock.charge(TrainContext::kGemm);
}

void block_backward(TrainContext& ctx, const float* dout, const float* x, const BlockShape& s, const BlockWeights& w,
                    const BlockSaved& v, const BlockGrads& g, float* dx) {
  const int C = s.width;
  const int64_t N = s.batch * s.tokens, M = s.batch * s.queries, qkv = s.all_tokens ? 3 * N * C : M * C + 2 * N * C;
  // df (M, inner), dh2, dx1, dy, dhq (M, C) each, dqkv (as qkv), dh1 (N, C)
  float* df = ctx.buffer(TrainContext::kBlock, static_cast<size_t>(M * s.inner + 5 * M * C + qkv + N * C));
  float *dh2 = df + M * s.inner, *dx1 = dh2 + M * C, *dy = dx1 + M * C, *dhq = dy + M * C, *dqkv = dhq + M * C;
  float* dh1 = dqkv + qkv;
  const bool relu = s.act == Activation::Relu;
  FamilyClock clock(ctx);
  linear_backward(ctx, dout, v.f, s.inner, w.mlp_proj_w, nullptr, df, g.mlp_proj_w, g.mlp_proj_b, M, s.inner, C,
                  Epilogue::kDropoutAdd, s.resid_p, s.mlp_seed);
  clock.charge(TrainContext::kGemm);
  if (!relu) activation_pass(ctx, s, v.pre, df, true);
  clock.charge(TrainContext::kElementwise);
  linear_backward(ctx, df, v.h2, C, w.c_fc_w, relu ? v.f : nullptr, dh2, g.c_fc_w, g.c_fc_b, M, C, s.inner,
                  relu ? Epilogue::kRelu : Epilogue::kNone, 0.0f, 0);
  clock.charge(TrainContext::kGemm);
  // ln_2's gradient plus the MLP residual's, dout
  layer_norm_backward(ctx, dh2, v.x1, w.ln_2_w, v.mean2, v.rstd2, dx1, g.ln_2_w, g.ln_2_b, M, C, dout,
                      {s.queries, 0, 1, s.queries});
  clock.charge(TrainContext::kElementwise);
  linear_backward(ctx, dx1, v.y, C, w.attn_proj_w, nullptr, dy, g.attn_proj_w, g.attn_proj_b, M, C, C,
                  Epilogue::kDropoutAdd, s.resid_p, s.proj_seed);
  clock.charge(TrainContext::kGemm);
  const AttentionLayout layout = attention_layout(s);
  const float* k = s.all_tokens ? v.qkv + C : v.qkv + M * C;
  float* dk = s.all_tokens ? dqkv + C : dqkv + M * C;
  attention_backward(ctx, dy, v.qkv, k, k + C, v.probs, v.spans, layout, s.scale, s.attn_p, s.attn_seed, dqkv, dk,
                     dk + C);
  clock.charge(TrainContext::kAttention);
  if (s.all_tokens) {
    linear_backward(ctx, dqkv, v.h1, C, w.c_attn_w, nullptr, dh1, g.c_attn_w, g.c_attn_b, N, C, 3 * C, Epilogue::kNone,
                    0.0f, 0);
    clock.charge(TrainContext::kGemm);
  } else {
    const int64_t CC = int64_t{C} * C;
    linear_backward(ctx, dk, v.h1, C, w.c_attn_w + CC, nullptr, dh1, g.c_attn_w + CC, g.c_attn_b + C, N, C, 2 * C,
                    Epilogue::kNone, 0.0f, 0);
    linear_backward(ctx, dqkv, v.hq, C, w.c_attn_w, nullptr, dhq, g.c_attn_w, g.c_attn_b, M, C, C, Epilogue::kNone,
                    0.0f, 0);
    clock.charge(TrainContext::kGemm);
    scatter_add_queries(ctx, s, dhq, dh1);
    clock.charge(TrainContext::kElementwise);
  }
  // ln_1's gradient plus the attention residual's, dx1, at the queries' rows
  layer_norm_backward(ctx, dh1, x, w.ln_1_w, v.mean1, v.rstd1, dx, g.ln_1_w, g.ln_1_b, N, C, dx1,
                      {s.tokens, s.all_tokens ? 0 : s.query_first, s.all_tokens ? 1 : s.query_step, s.queries});
  clock.charge(TrainContext::kElementwise);
}

}  // namespace dt
