#include "train/linear.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace dt {

namespace {

constexpr int64_t kRows = 120;     // rows per block of the forward and dx products: a multiple of every build's tile
constexpr int kGradRows = 48;      // rows of dw per block of the dw product
constexpr int64_t kReduce = 1920;  // rows of the dw product's reduction per part (measured best of 240-3840 here)

void check(const char* who, int64_t M, int K, int N, int64_t ldx, Epilogue epilogue, float p) {
  DT_CHECK(M >= 0 && K >= 1 && N >= 1, who, ": bad shape M=", M, " K=", K, " N=", N);
  DT_CHECK(ldx >= K, who, ": ldx=", ldx, " < K=", K);
  DT_CHECK(M * N < (int64_t{1} << 32), who, ": at most 2^32 outputs, got ", M * N);
  DT_CHECK(M <= INT32_MAX, who, ": at most 2^31 rows, got ", M);
  if (epilogue == Epilogue::kDropoutAdd) DT_CHECK(p >= 0.0f && p < 1.0f, who, ": p must be in [0, 1), got ", p);
}

int panels(int cols, int P) { return (cols + P - 1) / P; }

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
  // The dw product reduces over the M rows of both g (M, N) and x (M, K): the kernel reads one of them transposed
  // and the other packed in panels. Transposing costs more than packing, so the narrower one is transposed: g when
  // N <= K (dw = g^T x directly), else x (dw^T = x^T g, transposed into dw at the end).
  const bool transpose_g = N <= K;
  const int a = transpose_g ? N : K, b = transpose_g ? K : N;  // the product is (a, b) = A^T B
  const int64_t chunks = (M + kRows - 1) / kRows;
  // The reduction is cut in `parts` of about kReduce rows (whole chunks), each a product of its own whose panels
  // stay in cache while it runs; the parts' results are added in order at the end.
  const int64_t parts = std::max<int64_t>(1, (M + kReduce / 2) / kReduce);
  const int64_t part_chunks = (chunks + parts - 1) / parts, part_rows = part_chunks * kRows;
  float* wp = ctx.buffer(TrainContext::kPacked, static_cast<size_t>(K) * N);            // w (N, K) in panels
  float* at = ctx.buffer(TrainContext::kTransposed, static_cast<size_t>(a) * M);        // A^T (a, M)
  float* bp = ctx.buffer(TrainContext::kPanels, static_cast<size_t>(M) * b);            // B (M, b), each part in panels
  float* out = ctx.buffer(TrainContext::kPartial, static_cast<size_t>(parts * a * b));  // each part's A^T B
  // the column sums of g per block of rows (added in block order after, so that the bias gradient has the same
  // bits whichever thread took which block), then each member's block of g (kRows, N)
  float* sums = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(N * chunks + (copy_g ? kRows * N * T : 0)));
  std::fill(sums, sums + N * chunks, 0.0f);
  if (dx) {  // w (N, K) in panels of its K columns, by blocks of its rows
    ctx.parallel((N + kGradRows - 1) / kGradRows, [&](int64_t c, int) {
      const int64_t n0 = c * kGradRows;
      k.pack_panels_rows(w + n0 * K, K, std::min<int64_t>(kGradRows, N - n0), K, P, wp, N, n0);
    });
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
    if (dx) {
      mm.matmul_packed(dx + m0 * K, K, g, N, wp, nullptr, static_cast<int>(rows), N, K, 0, K, false, nullptr);
    }
    const float* xr = x + m0 * ldx;
    k.transpose(transpose_g ? g : xr, transpose_g ? N : ldx, at + m0, M, rows, a);
    const int64_t q = c / part_chunks, r0 = q * part_rows;
    k.pack_panels_rows(transpose_g ? xr : g, transpose_g ? ldx : N, rows, b, P, bp + r0 * b,
                       std::min(part_rows, M - r0), m0 - r0);
  });
  // Each part's A^T B by blocks of kGradRows rows times one panel of columns, panel-major so that a member's
  // consecutive blocks tend to share the panel they stream.
  const int64_t row_blocks = (a + kGradRows - 1) / kGradRows, col_panels = panels(b, P);
  ctx.parallel(parts * col_panels * row_blocks, [&](int64_t c, int) {
    const int64_t q = c / (col_panels * row_blocks), r0 = q * part_rows, rows_q = std::min(part_rows, M - r0);
    const int j = static_cast<int>(c / row_blocks % col_panels);
    const int i0 = static_cast<int>(c % row_blocks) * kGradRows, rows = std::min(kGradRows, a - i0);
    const int n0 = j * P, n1 = std::min(b, n0 + P);
    mm.matmul_packed(out + (q * a + i0) * b, b, at + static_cast<int64_t>(i0) * M + r0, static_cast<int>(M),
                     bp + r0 * b, nullptr, rows, static_cast<int>(rows_q), b, n0, n1, false, nullptr);
  });
  // dw: the parts added in order (and transposed when the product was dw^T), by blocks of its rows
  ctx.parallel((N + kGradRows - 1) / kGradRows, [&](int64_t c, int) {
    const int n0 = static_cast<int>(c) * kGradRows, rows = std::min(kGradRows, N - n0);
    for (int64_t q = 1; q < parts; ++q) {  // into part 0, the rows of its result that make these rows of dw
      for (int i = 0; i < (transpose_g ? rows : a); ++i) {
        float* o = out + (transpose_g ? static_cast<int64_t>(n0 + i) * b : static_cast<int64_t>(i) * b + n0);
        const float* add = o + q * a * b;
        for (int j = 0; j < (transpose_g ? b : rows); ++j) o[j] += add[j];
      }
    }
    if (transpose_g) {
      const int64_t first = static_cast<int64_t>(n0) * K;
      std::copy(out + first, out + first + static_cast<int64_t>(rows) * K, dw + first);
    } else {
      k.transpose(out + n0, N, dw + static_cast<int64_t>(n0) * K, K, K, rows);
    }
  });
  if (db) {
    std::fill(db, db + N, 0.0f);
    for (int64_t c = 0; c < chunks; ++c)
      for (int n = 0; n < N; ++n) db[n] += sums[c * N + n];
  }
}

}  // namespace dt
