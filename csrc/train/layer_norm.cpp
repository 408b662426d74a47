#include "train/layer_norm.h"

#include <algorithm>

#include "common/check.h"

namespace dt {

namespace {

constexpr int64_t kRows = 64;  // rows per chunk

}  // namespace

void layer_norm_forward(TrainContext& ctx, const float* x, const float* w, const float* b, float* y, float* mean,
                        float* rstd, int64_t rows, int n, float eps) {
  DT_CHECK(rows >= 0 && n >= 1, "layer_norm_forward: bad shape (", rows, ", ", n, ")");
  const TrainKernels& k = ctx.k();
  ctx.parallel((rows + kRows - 1) / kRows, [&](int64_t c, int) {
    const int64_t r0 = c * kRows, count = std::min(kRows, rows - r0);
    k.layer_norm_forward(x + r0 * n, w, b, y + r0 * n, mean + r0, rstd + r0, count, n, eps);
  });
}

void layer_norm_backward(TrainContext& ctx, const float* dy, const float* x, const float* w, const float* mean,
                         const float* rstd, float* dx, float* dw, float* db, int64_t rows, int n, const float* dres,
                         const ResidualRows& res) {
  DT_CHECK(rows >= 0 && n >= 1, "layer_norm_backward: bad shape (", rows, ", ", n, ")");
  DT_CHECK(!dres || (res.tokens >= 1 && rows % res.tokens == 0 && res.start >= 0 && res.step >= 1 && res.count >= 0 &&
                     res.start + (res.count - 1) * int64_t{res.step} < res.tokens),
           "layer_norm_backward: residual rows (tokens ", res.tokens, ", start ", res.start, ", step ", res.step,
           ", count ", res.count, ") do not fit ", rows, " rows");
  const TrainKernels& k = ctx.k();
  const int64_t chunks = (rows + kRows - 1) / kRows;
  // dw and db summed per chunk, then the chunks' sums added in order: the same bits whichever thread took which
  float* sums = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(2 * n * chunks));
  std::fill(sums, sums + 2 * n * chunks, 0.0f);
  ctx.parallel(chunks, [&](int64_t c, int) {
    const int64_t r0 = c * kRows, count = std::min(kRows, rows - r0);
    float* own = sums + 2 * n * c;
    k.layer_norm_backward(dy + r0 * n, x + r0 * n, w, mean + r0, rstd + r0, dx + r0 * n, own, own + n, count, n);
    if (!dres) return;
    for (int64_t r = r0; r < r0 + count; ++r) {  // the residual's gradient, while these rows of dx are in cache
      const int64_t t = r % res.tokens - res.start;
      if (t < 0 || t % res.step != 0 || t / res.step >= res.count) continue;
      const float* g = dres + (r / res.tokens * res.count + t / res.step) * n;
      float* d = dx + r * n;
      for (int i = 0; i < n; ++i) d[i] += g[i];
    }
  });
  std::fill(dw, dw + n, 0.0f);
  std::fill(db, db + n, 0.0f);
  for (int64_t c = 0; c < chunks; ++c) {
    for (int i = 0; i < n; ++i) {
      dw[i] += sums[2 * n * c + i];
      db[i] += sums[2 * n * c + n + i];
    }
  }
}

}  // namespace dt
