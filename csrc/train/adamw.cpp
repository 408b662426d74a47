#include "train/adamw.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace dt {

namespace {

constexpr int64_t kChunk = int64_t{1} << 14;  // floats per chunk of work

struct Chunk {
  int tensor;
  int64_t offset, count;
};

}  // namespace

double adamw_step(TrainContext& ctx, const std::vector<AdamWTensor>& tensors, const AdamWOptions& o) {
  DT_CHECK(o.lr >= 0.0f && o.eps >= 0.0f && o.weight_decay >= 0.0f, "adamw: lr, eps and weight_decay must be >= 0");
  DT_CHECK(o.beta1 >= 0.0f && o.beta1 < 1.0f && o.beta2 >= 0.0f && o.beta2 < 1.0f, "adamw: betas must be in [0, 1)");
  std::vector<Chunk> chunks;
  for (int t = 0; t < static_cast<int>(tensors.size()); ++t) {
    DT_CHECK(tensors[t].n >= 0 && *tensors[t].step >= 0.0f, "adamw: tensor ", t, " has n=", tensors[t].n,
             ", step=", *tensors[t].step);
    for (int64_t off = 0; off < tensors[t].n; off += kChunk)
      chunks.push_back({t, off, std::min(kChunk, tensors[t].n - off)});
  }
  const TrainKernels& k = ctx.k();
  const int64_t n_chunks = static_cast<int64_t>(chunks.size());
  std::vector<double> squares(chunks.size());
  ctx.parallel(n_chunks, [&](int64_t c, int) {
    const Chunk& ch = chunks[c];
    squares[c] = k.sum_squares(tensors[ch.tensor].grad + ch.offset, ch.count);
  });
  double total = 0.0;
  for (double s : squares) total += s;
  const double norm = std::sqrt(total);
  // clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1
  const float scale = o.max_grad_norm > 0.0f ? static_cast<float>(std::min(1.0, o.max_grad_norm / (norm + 1e-6)))
                                             : 1.0f;
  std::vector<AdamWStep> steps(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t) {
    const double step = *tensors[t].step += 1.0f;
    steps[t] = {o.lr,
                o.beta1,
                o.beta2,
                o.eps,
                o.weight_decay,
                static_cast<float>(1.0 - std::pow(static_cast<double>(o.beta1), step)),
                static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(o.beta2), step))),
                scale};
  }
  ctx.parallel(n_chunks, [&](int64_t c, int) {
    const Chunk& ch = chunks[c];
    const AdamWTensor& t = tensors[ch.tensor];
    k.adamw(t.param + ch.offset, t.grad + ch.offset, t.exp_avg + ch.offset, t.exp_avg_sq + ch.offset, ch.count,
            steps[ch.tensor]);
  });
  return norm;
}

}  // namespace dt
