#include "train/linear.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace dt {

namespace {

constexpr int64_t kRows = 120;  // most rows per block of the forward and backward products
constexpr int64_t kTile = 12;   // block rows are a multiple of every build's tile rows (6, 6 and 4)
constexpr int kGradRows = 48;   // rows of w per block of its packing and of dw per block of the final sums
constexpr int64_t kParts = 4;   // parts of the dw product's reduction, whatever the rows and the threads

void check(const char* who, int64_t M, int K, int N, int64_t ldx, Epilogue epilogue, float p) {
  DT_CHECK(M >= 0 && K >= 1 && N >= 1, who, ": bad shape M=", M, " K=", K, " N=", N);
  DT_CHECK(ldx >= K, who, ": ldx=", ldx, " < K=", K);
  DT_CHECK(M * N < (int64_t{1} << 32), who, ": at most 2^32 outputs, got ", M * N);
  DT_CHECK(M <= INT32_MAX, who, ": at most 2^31 rows, got ", M);
  if (epilogue == Epilogue::kDropoutAdd) DT_CHECK(p >= 0.0f && p < 1.0f, who, ": p must be in [0, 1), got ", p);
}

int panels(int cols, int P) { return (cols + P - 1) / P; }

// Rows per block for M rows, at most kRows: as many blocks in each of kParts parts (12 blocks of 108 rows at M 1,280,
// where blocks of 120 make 11), so that the parts, and halves of the blocks, take as long as each other.
int64_t block_rows(int64_t M) {
  const int64_t per_part = (M + kParts * kRows - 1) / (kParts * kRows);
  const int64_t rows = (M + kParts * per_part - 1) / (kParts * per_part);
  return std::min(kRows, (rows + kTile - 1) / kTile * kTile);
}

// The lines of rows [r0, r1) of a (.., cols) matrix, for a matmul to bring into cache as it runs.
Prefetch next_rows(const float* a, int cols, int64_t r0, int64_t r1) {
  return {reinterpret_cast<uintptr_t>(a + r0 * cols), reinterpret_cast<uintptr_t>(a + r1 * cols)};
}

}  // namespace

void linear_forward(TrainContext& ctx, const float* x, int64_t ldx, const float* w, const float* b, float* y, int64_t M,
                    int K, int N, Epilogue epilogue, const float* residual, float p, uint64_t seed) {
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
  const int64_t per_block = block_rows(M);
  ctx.parallel((M + per_block - 1) / per_block, [&](int64_t c, int) {
    const int64_t m0 = c * per_block, rows = std::min(per_block, M - m0);
    float* out = y + m0 * N;
    // the next block's rows of x (and those between them when ldx > K) come into cache under this block's product
    Prefetch pf = next_rows(x, static_cast<int>(ldx), std::min(M, m0 + per_block), std::min(M, m0 + 2 * per_block));
    mm.matmul_packed(out, N, x + m0 * ldx, static_cast<int>(ldx), wt, b, static_cast<int>(rows), K, N, 0, N,
                     epilogue == Epilogue::kRelu, &pf);
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
  const int T = ctx.threads();
  const int64_t dw_size = static_cast<int64_t>(N) * K;
  if (M == 0) {
    std::fill(dw, dw + dw_size, 0.0f);
    if (db) std::fill(db, db + N, 0.0f);
    return;
  }
  const bool copy_g = epilogue != Epilogue::kNone;  // g differs from dy
  // matmul_tn reads A as it lies and B packed in panels, a block of rows at a time: B is the narrower of g and x (the
  // less to pack), but x when g is narrower than a panel (an action head's few columns would take matmul_tn's scalar
  // column tail). A = g gives dw = g^T x, A = x gives dw^T = x^T g (transposed into dw at the end).
  const bool a_is_g = N >= K || N < k.panel;
  const int a = a_is_g ? N : K, b = a_is_g ? K : N;  // the product is (a, b) = A^T B
  // parts of the blocks of rows, of sizes within one block of each other: part q has blocks [first(q), first(q + 1))
  const int64_t per_block = block_rows(M), chunks = (M + per_block - 1) / per_block, parts = std::min(chunks, kParts);
  auto first = [&](int64_t q) { return q * chunks / parts; };
  float* wp = ctx.buffer(TrainContext::kPacked, static_cast<size_t>(K) * N);          // w (N, K) in panels
  float* bp = ctx.buffer(TrainContext::kPanels, static_cast<size_t>(T * kRows * b));  // each member's B block
  // each part's A^T B; part 0 straight into dw when that is its layout
  float* partial = ctx.buffer(TrainContext::kPartial, static_cast<size_t>((a_is_g ? parts - 1 : parts) * dw_size));
  float* part0 = a_is_g ? dw : partial;
  // the column sums of g per block of rows (added in block order after, so that the bias gradient has the same
  // bits whichever thread took which block), then each member's block of g (kRows, N)
  float* sums = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(N * chunks + (copy_g ? kRows * N * T : 0)));
  std::fill(sums, sums + N * chunks, 0.0f);
  if (dx) {  // w (N, K) in panels of its K columns, by blocks of its rows
    ctx.parallel((N + kGradRows - 1) / kGradRows, [&](int64_t c, int) {
      const int64_t n0 = c * kGradRows;
      k.pack_panels_rows(w + n0 * K, K, std::min<int64_t>(kGradRows, N - n0), K, mm.panel, wp, N, n0);
    });
  }
  const DropoutKey key = dropout_key(epilogue == Epilogue::kDropoutAdd ? p : 0.0f, seed, 0);
  // Each part's blocks of rows in order by one member: g, dx = g w, and the part's A^T B += the block's, with A and
  // B still in cache.
  ctx.parallel(parts, [&](int64_t q, int member) {
    float* out = q == 0 ? part0 : partial + (a_is_g ? q - 1 : q) * dw_size;
    float* bb = bp + member * kRows * b;
    for (int64_t c = first(q); c < first(q + 1); ++c) {
      const int64_t m0 = c * per_block, rows = std::min(per_block, M - m0);
      const float* g = dy + m0 * N;
      if (copy_g) {
        float* block = sums + N * chunks + member * kRows * N;
        k.linear_grad_rows(g, epilogue == Epilogue::kRelu ? y + m0 * N : nullptr,
                           epilogue == Epilogue::kDropoutAdd ? &key : nullptr, static_cast<uint32_t>(m0 * N), block,
                           sums + c * N, rows, N);
        g = block;
      } else {
        k.linear_grad_rows(g, nullptr, nullptr, 0, nullptr, sums + c * N, rows, N);
      }
      if (dx) {  // the next block's rows of dy (under the first half of the panels) and y (relu) come into cache
        const int64_t next = std::min(M, m0 + per_block), next_end = std::min(M, next + per_block);
        Prefetch pf_dy = next_rows(dy, N, next, next_end);
        Prefetch pf_y = epilogue == Epilogue::kRelu ? next_rows(y, N, next, next_end) : Prefetch{};
        const int half = std::min(K, (panels(K, mm.panel) + 1) / 2 * mm.panel);
        mm.matmul_packed(dx + m0 * K, K, g, N, wp, nullptr, static_cast<int>(rows), N, K, 0, half, false, &pf_dy);
        if (half < K)
          mm.matmul_packed(dx + m0 * K, K, g, N, wp, nullptr, static_cast<int>(rows), N, K, half, K, false, &pf_y);
      }
      const float* xr = x + m0 * ldx;
      k.pack_panels_rows(a_is_g ? xr : g, a_is_g ? ldx : N, rows, b, k.panel, bb, rows, 0);
      k.matmul_tn(out, b, a_is_g ? g : xr, a_is_g ? N : ldx, bb, rows, a, b, 0, b, c > first(q));
    }
  });
  // dw: the parts added in order (and transposed when the product was dw^T); db: the blocks' sums in block order;
  // by blocks of rows of dw
  ctx.parallel((N + kGradRows - 1) / kGradRows, [&](int64_t c, int) {
    const int n0 = static_cast<int>(c) * kGradRows, rows = std::min(kGradRows, N - n0);
    for (int64_t q = 1; q < parts; ++q) {  // into part 0, the rows (or columns) of its result that make these of dw
      const float* add = partial + (a_is_g ? q - 1 : q) * dw_size;
      for (int i = 0; i < (a_is_g ? rows : K); ++i) {
        const int64_t o = a_is_g ? static_cast<int64_t>(n0 + i) * K : static_cast<int64_t>(i) * N + n0;
        for (int j = 0; j < (a_is_g ? K : rows); ++j) part0[o + j] += add[o + j];
      }
    }
    if (!a_is_g) k.transpose(part0 + n0, N, dw + static_cast<int64_t>(n0) * K, K, K, rows);
    if (db) {
      std::fill(db + n0, db + n0 + rows, 0.0f);
      for (int64_t q = 0; q < chunks; ++q)
        for (int n = n0; n < n0 + rows; ++n) db[n] += sums[q * N + n];
    }
  });
}

}  // namespace dt
