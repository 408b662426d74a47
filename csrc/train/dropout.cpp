#include "train/dropout.h"

#include <algorithm>

#include "common/check.h"
#include "train/context.h"

namespace dt {

namespace {

constexpr int64_t kBlock = int64_t{1} << 32;  // past 2^32 elements the counter wraps: re-key each block
constexpr int64_t kRows = 64;                 // rows per chunk of shift_dropout

void check_p(const char* who, int64_t n, float p) {
  DT_CHECK(n >= 0, who, ": n must be >= 0, got ", n);
  DT_CHECK(p >= 0.0f && p < 1.0f, who, ": p must be in [0, 1), got ", p);
}

void check_shape(const char* who, int64_t rows, int cols, float p) {
  DT_CHECK(rows >= 0 && cols >= 1 && rows * cols <= kBlock, who, ": bad shape (", rows, ", ", cols,
           "): at most 2^32 elements");
  check_p(who, rows * cols, p);
}

}  // namespace

DropoutKey dropout_key(float p, uint64_t seed, uint64_t block) {
  const uint32_t hi = static_cast<uint32_t>(seed >> 32) ^ hash32(static_cast<uint32_t>(block) + 0x9e3779b9U);
  return {static_cast<uint32_t>(seed), hi, static_cast<uint32_t>(static_cast<double>(p) * (1u << 24) + 0.5),
          1.0f / (1.0f - p)};
}

void dropout_mask(float* out, int64_t n, float p, uint64_t seed) {
  check_p("dropout_mask", n, p);
  for (int64_t base = 0; base < n; base += kBlock) {
    const DropoutKey key = dropout_key(p, seed, static_cast<uint64_t>(base >> 32));
    for (int64_t i = base; i < std::min(n, base + kBlock); ++i) out[i] = dropout_value(key, static_cast<uint32_t>(i));
  }
}

void shift_dropout_forward(TrainContext& ctx, const float* x, const float* shift, float* out, int64_t rows, int cols,
                           float p, uint64_t seed) {
  check_shape("shift_dropout_forward", rows, cols, p);
  const TrainKernels& k = ctx.k();
  const DropoutKey key = dropout_key(p, seed, 0);
  ctx.parallel((rows + kRows - 1) / kRows, [&](int64_t c, int) {
    const int64_t r0 = c * kRows, n = std::min(kRows, rows - r0) * cols;
    for (int64_t r = r0; r < r0 + n / cols; ++r)
      for (int i = 0; i < cols; ++i) out[r * cols + i] = x[r * cols + i] + shift[i];
    k.dropout_rows(out + r0 * cols, out + r0 * cols, n, key, static_cast<uint32_t>(r0 * cols));
  });
}

void shift_dropout_backward(TrainContext& ctx, const float* dy, float* dx, float* dshift, int64_t rows, int cols,
                            float p, uint64_t seed) {
  check_shape("shift_dropout_backward", rows, cols, p);
  const TrainKernels& k = ctx.k();
  const DropoutKey key = dropout_key(p, seed, 0);
  const int64_t chunks = (rows + kRows - 1) / kRows;
  float* sums = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(cols * std::max<int64_t>(chunks, 1)));
  std::fill(sums, sums + cols * chunks, 0.0f);
  ctx.parallel(chunks, [&](int64_t c, int) {
    const int64_t r0 = c * kRows;
    k.linear_grad_rows(dy + r0 * cols, nullptr, &key, static_cast<uint32_t>(r0 * cols), dx + r0 * cols, sums + c * cols,
                       std::min(kRows, rows - r0), cols);
  });
  std::fill(dshift, dshift + cols, 0.0f);
  for (int64_t c = 0; c < chunks; ++c)
    for (int i = 0; i < cols; ++i) dshift[i] += sums[c * cols + i];
}

}  // namespace dt
