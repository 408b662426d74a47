#include "train/embed.h"

#include <algorithm>
#include <vector>

#include "common/check.h"

namespace dt {

namespace {

constexpr int64_t kSteps = 64;  // steps per chunk

void check(const char* who, const int64_t* timesteps, const EmbedShape& s) {
  DT_CHECK(s.steps >= 0 && s.S >= 1 && s.A >= 1 && s.C >= 1 && s.table_rows >= 1, who, ": bad shape (steps ", s.steps,
           ", state_dim ", s.S, ", act_dim ", s.A, ", hidden ", s.C, ", table rows ", s.table_rows, ")");
  for (int64_t n = 0; n < s.steps; ++n) {
    DT_CHECK(timesteps[n] >= 0 && timesteps[n] < s.table_rows, who, ": timestep ", timesteps[n], " at ", n,
             " outside [0, ", s.table_rows, ")");
  }
}

// (rows, cols) row-major transposed into dst (cols, rows).
void transposed(const float* src, int rows, int cols, float* dst) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) dst[static_cast<int64_t>(c) * rows + r] = src[static_cast<int64_t>(r) * cols + c];
}

}  // namespace

void embed_forward(TrainContext& ctx, const float* states, const float* actions, const float* rtg,
                   const int64_t* timesteps, const float* w_return, const float* b_return, const float* w_state,
                   const float* b_state, const float* w_action, const float* b_action, const float* table, float* x,
                   const EmbedShape& s) {
  check("embed_forward", timesteps, s);
  std::vector<float> wt_state(static_cast<size_t>(s.S) * s.C), wt_action(static_cast<size_t>(s.A) * s.C);
  transposed(w_state, s.C, s.S, wt_state.data());
  transposed(w_action, s.C, s.A, wt_action.data());
  const EmbedWeights w{w_return, b_return, wt_state.data(), b_state, wt_action.data(), b_action, table};
  const TrainKernels& k = ctx.k();
  ctx.parallel((s.steps + kSteps - 1) / kSteps, [&](int64_t c, int) {
    const int64_t n0 = c * kSteps, rows = std::min(kSteps, s.steps - n0);
    k.embed_rows(states + n0 * s.S, actions + n0 * s.A, rtg + n0, timesteps + n0, w, x + 3 * n0 * s.C, rows, s.S, s.A,
                 s.C);
  });
}

void embed_backward(TrainContext& ctx, const float* dx, const float* states, const float* actions, const float* rtg,
                    const int64_t* timesteps, float* dw_return, float* db_return, float* dw_state, float* db_state,
                    float* dw_action, float* db_action, float* dtable, const EmbedShape& s) {
  check("embed_backward", timesteps, s);
  const TrainKernels& k = ctx.k();
  const int C = s.C;
  const int64_t per = static_cast<int64_t>(s.S + s.A + 4) * C, chunks = (s.steps + kSteps - 1) / kSteps;
  float* acc = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(per * std::max<int64_t>(chunks, 1)));
  std::fill(acc, acc + per * chunks, 0.0f);
  ctx.parallel(chunks, [&](int64_t c, int) {
    const int64_t n0 = c * kSteps, rows = std::min(kSteps, s.steps - n0);
    k.embed_grad_rows(dx + 3 * n0 * C, states + n0 * s.S, actions + n0 * s.A, rtg + n0, acc + c * per, rows, s.S, s.A,
                      C);
  });
  std::vector<float> total(static_cast<size_t>(per), 0.0f);  // the chunks' sums in chunk order
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t i = 0; i < per; ++i) total[i] += acc[c * per + i];
  const float* t = total.data();
  std::copy(t, t + C, dw_return);  // (C, 1)
  std::copy(t + C, t + 2 * C, db_return);
  transposed(t + 2 * C, s.S, C, dw_state);  // (S, C) -> (C, S)
  std::copy(t + (2 + s.S) * C, t + (3 + s.S) * C, db_state);
  transposed(t + (3 + s.S) * C, s.A, C, dw_action);
  std::copy(t + (3 + s.S + s.A) * C, t + (4 + s.S + s.A) * C, db_action);
  std::fill(dtable, dtable + s.table_rows * C, 0.0f);
  for (int64_t n = 0; n < s.steps; ++n) {  // every token of step n shares E[t]: its gradient is their sum
    float* row = dtable + timesteps[n] * C;
    const float* g = dx + 3 * n * C;
    for (int c = 0; c < C; ++c) row[c] += g[c] + g[C + c] + g[2 * C + c];
  }
}

}  // namespace dt
