#include "train/linear.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace dt {

namespace {

constexpr int64_t kRows = 120;    // rows per block of the forward and dx products: a multiple of every build's tile
constexpr int kGradRows = 48;     // rows of dw per block of the dw product

void check(const char* who, int64_t M, int K, int N, int64_t ldx, Epilogue epilogue, float p) {
  DT_CHECK(M >= 0 && K >= 1 && N >= 1, who, ": bad shape M=", M, " K=", K, " N=", N);
  DT_CHECK(ldx >= K, who, ": ldx=", ldx, " < K=", K);
  DT_CHECK(M * N < (int64_t{1} << 32), who, ": at most 2^32 outputs, got ", M * N);
  DT_CHECK(M <= INT32_MAX, who, ": at most 2^31 rows, got ", M);
  if (epilogue == Epilogue::kDropoutAdd) DT_CHECK(p >= 0.0f && p < 1.0f, who, ": p must be in [0, 1), got ", p);
}

int panels(int cols, int P) { return (cols + P - 1) / P; }

// Panel j of a (rows, cols) matrix `a` (leading dimension lda) in pack_panels' layout at dst: (rows, P) row-major
// at dst + j * rows * P, the last narrower panel (rows, cols % P) after the full ones; rows [r0, r1) only.
void pack_rows(float* dst, const float* a, int64_t lda, int64_t rows, int cols, int P, int j, int64_t r0,
               int64_t r1) {
  const int c0 = j * P, width = std::min(P, cols - c0);
  float* d = dst + static_cast<int64_t>(c0) * rows;
  for (int64_t r = r0; r < r1; ++r) std::memcpy(d + r * width, a + r * lda + c0, sizeof(float) * width);
}

}  // namespace

void linear_forward(TrainContext& ctx, const float* x, int64_t ldx, const float* w, const float* b, float* y,
                    int64_t M, int K, int N, Epilogue epilogue, const float* residual, float p, uint64_t seed) {
  check("linear_forward", M, K, N, ldx, epilogue, p);
  const Kernels& mm = ctx.mm();
  const TrainKernels& k = ctx.k();
  const int P = mm.panel;
  // w^T (K, N) in panels: panel j is the transpose of rows [jP, jP + P) of w.
  float* wt = ctx.buffer(TrainContext::kPacked, static_cast<size_t>(K) * N);
  ctx.parallel(panels(N, P), [&](int64_t j, int) {
    const int n0 = static_cast<int>(j) * P, width = std::min(P, N - n0);
    k.transpose(w + static_cast<int64_t>(n0) * K, K, wt + static_cast<int64_t>(n0) * K, width, width, K);
  });
  const DropoutKey key = dropout_key(epilogue == Epilogue::kDropoutAdd ? p : 0.0f, seed, 0);
  ctx.parallel((M + kRows - 1) / kRows, [&](int64_t c, int) {
    const int64_t m0 = c * kRows, rows = std::min(kRows, M - m0);
    float* out = y + m0 * N;
    mm.matmul_packed(out, N, x + m0 * ldx, static_cast<int>(ldx), wt, b, static_cast<int>(rows), K, N, 0, N,
                     epilogue == Epilogue::kRelu, nullptr);
    if (epilogue == Epilogue::kDropoutAdd)
      k.dropout_add_rows(out, residual + m0 * N, out, rows, N, key, static_cast<uint32_t>(m0 * N));
  });
}

void linear_backward(TrainContext& ctx, const float* dy, const float* x, int64_t ldx, const float* w, const float* y,
                     float* dx, float* dw, float* db, int64_t M, int K, int N, Epilogue epilogue, float p,
                     uint64_t seed) {
  check("linear_backward", M, K, N, ldx, epilogue, p);
  const Kernels& mm = ctx.mm();
  const TrainKernels& k = ctx.k();
  const int P = mm.panel, T = ctx.threads();
  const bool copy_g = epilogue != Epilogue::kNone;  // g differs from dy
  const int64_t chunks = (M + kRows - 1) / kRows;
  float* wp = ctx.buffer(TrainContext::kPacked, static_cast<size_t>(K) * N);  // w (N, K) in panels of K columns
  float* gt = ctx.buffer(TrainContext::kTransposed, static_cast<size_t>(N) * M);  // g^T (N, M)
  float* xp = ctx.buffer(TrainContext::kPanels, static_cast<size_t>(M) * K);      // x (M, K) in panels
  // the column sums of g per block of rows (added in block order after, so that the bias gradient has the same
  // bits whichever thread took which block), then each member's block of g (kRows, N)
  float* sums = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(N * chunks + (copy_g ? kRows * N * T : 0)));
  std::fill(sums, sums + N * chunks, 0.0f);
  if (dx) {
    ctx.parallel(panels(K, P), [&](int64_t j, int) { pack_rows(wp, w, K, N, K, P, static_cast<int>(j), 0, N); });
  }
  const DropoutKey key = dropout_key(epilogue == Epilogue::kDropoutAdd ? p : 0.0f, seed, 0);
  ctx.parallel(chunks, [&](int64_t c, int part) {
    const int64_t m0 = c * kRows, rows = std::min(kRows, M - m0);
    const float* g = dy + m0 * N;
    if (copy_g) {
      float* block = sums + N * chunks + part * kRows * N;
      k.linear_grad_rows(g, epilogue == Epilogue::kRelu ? y + m0 * N : nullptr,
                         epilogue == Epilogue::kDropoutAdd ? &key : nullptr, static_cast<uint32_t>(m0 * N), block,
                         sums + c * N, rows, N);
      g = block;
    } else {
      k.linear_grad_rows(g, nullptr, nullptr, 0, nullptr, sums + c * N, rows, N);
    }
    k.transpose(g, N, gt + m0, M, rows, N);
    if (dx) {
      mm.matmul_packed(dx + m0 * K, K, g, N, wp, nullptr, static_cast<int>(rows), N, K, 0, K, false, nullptr);
    }
    for (int j = 0; j < panels(K, P); ++j) pack_rows(xp, x, ldx, M, K, P, j, m0, m0 + rows);
  });
  // dw = g^T x: blocks of kGradRows rows of dw times one panel of its columns, panel-major so that a member's
  // consecutive blocks tend to share the panel of x they stream.
  const int64_t row_blocks = (N + kGradRows - 1) / kGradRows;
  ctx.parallel(row_blocks * panels(K, P), [&](int64_t c, int) {
    const int j = static_cast<int>(c / row_blocks);
    const int r0 = static_cast<int>(c % row_blocks) * kGradRows, rows = std::min(kGradRows, N - r0);
    const int n0 = j * P, n1 = std::min(K, n0 + P);
    mm.matmul_packed(dw + static_cast<int64_t>(r0) * K, K, gt + static_cast<int64_t>(r0) * M, static_cast<int>(M),
                     xp, nullptr, rows, static_cast<int>(M), K, n0, n1, false, nullptr);
  });
  if (db) {
    std::fill(db, db + N, 0.0f);
    for (int64_t c = 0; c < chunks; ++c)
      for (int n = 0; n < N; ++n) db[n] += sums[c * N + n];
  }
}

}  // namespace dt
