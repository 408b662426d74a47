// Register-blocked matmul written once with GCC/Clang vector extensions, compiled three times (see kernels.h).
// Include with DT_KERNEL_NS (namespace), DT_VEC (floats per vector), DT_MR (rows per tile), DT_NV (vectors
// per tile) defined. A tile keeps DT_MR x DT_NV accumulators in registers; each k loads DT_NV vectors of w and
// broadcasts DT_MR values of `in`. Column blocks are the outer loop so a (K, DT_NV * DT_VEC) panel of w stays
// in L1 while all row tiles stream past it; the rows left over (< DT_MR) take one more pass, not one each.
// Columns left over (< DT_VEC) are done by a scalar loop in matmul, by tiles of one vector in matmul_packed.
// matmul_packed reads w packed in panels (kernels.h), so that each panel streams from memory in one contiguous run.
// matmul_nt takes dot products of rows against rows (attention scores against cached rows), four keys at a time
// with one shuffle tree for their lane sums. masked_softmax is a softmax over a masked row with a polynomial exp.
// layer_norm is torch's (biased variance, two passes).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/simd.h"
#include "engine/kernels.h"

namespace dt {
namespace DT_KERNEL_NS {

namespace {

typedef float vec __attribute__((vector_size(DT_VEC * sizeof(float)), aligned(sizeof(float))));

// Prefetch a cache line at address `at` (a hint: it never faults, so the address may lie past an array's end;
// integer arithmetic, so computing it is defined behaviour).
template <int Locality>
inline void prefetch_line(uintptr_t at) {
  __builtin_prefetch(reinterpret_cast<const void*>(at), 0, Locality);
}

// Bytes per cache line on x86-64: one prefetch brings in one line.
constexpr uintptr_t kCacheLine = 64;

// One cache line of the prefetch work (kernels.h), if any is left: called once per k step of a register tile.
inline void issue_line(Prefetch& pf) {
  if (pf.next < pf.end) {
    prefetch_line<2>(pf.next);
    pf.next += kCacheLine;
  }
}

template <int MR, int NV>
inline void tile(float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias, int K,
                 bool relu, Prefetch& pf) {
  vec acc[MR][NV];
  for (int v = 0; v < NV; ++v) {
    vec b = bias ? *reinterpret_cast<const vec*>(bias + v * DT_VEC) : vec{};
    for (int r = 0; r < MR; ++r) acc[r][v] = b;
  }
  for (int k = 0; k < K; ++k) {
    issue_line(pf);
    vec wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = *reinterpret_cast<const vec*>(w + k * ldw + v * DT_VEC);
    for (int r = 0; r < MR; ++r) {
      const float a = in[r * ldi + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * wv[v];
    }
  }
  if (relu)
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = acc[r][v] > 0.0f ? acc[r][v] : vec{};
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<vec*>(out + r * ldo + v * DT_VEC) = acc[r][v];
}

// The last `rows` (< DT_MR) rows in one pass over w: tile<rows, NV>, the row count chosen at run time.
template <int R, int NV>
inline void tail(int rows, float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias,
                 int K, bool relu, Prefetch& pf) {
  if constexpr (R > 0) {
    if (rows == R) tile<R, NV>(out, ldo, in, ldi, w, ldw, bias, K, relu, pf);
    else tail<R - 1, NV>(rows, out, ldo, in, ldi, w, ldw, bias, K, relu, pf);
  }
}

// All rows of one column block of NV vectors.
template <int NV>
void column_block(float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias, int M,
                  int K, bool relu, Prefetch& pf) {
  int m = 0;
  for (; m + DT_MR <= M; m += DT_MR) tile<DT_MR, NV>(out + m * ldo, ldo, in + m * ldi, ldi, w, ldw, bias, K, relu, pf);
  if (m < M) tail<DT_MR - 1, NV>(M - m, out + m * ldo, ldo, in + m * ldi, ldi, w, ldw, bias, K, relu, pf);
}

// MR rows of the last `cols` (< DT_VEC) columns of a panel whose rows are `ldw` floats, w at the first of them and
// the panel's last row ending w's array: one vector per row of w, whose lanes from `cols` on (w's next row, or past
// the array's end at its last rows, read lane by lane there) are never stored.
template <int MR>
inline void narrow_tile(float* out, int ldo, const float* in, int ldi, const float* w, int ldw, int cols,
                        const float* bias, int K, bool relu) {
  vec acc[MR];
  vec b{};
  for (int l = 0; l < cols; ++l) b[l] = bias ? bias[l] : 0.0f;
  for (int r = 0; r < MR; ++r) acc[r] = b;
  // rows k whose DT_VEC floats from w + k * ldw lie in the array, which ends at w + (K - 1) * ldw + cols
  const int last = (K - 1) * ldw + cols - DT_VEC, whole = last < 0 ? 0 : std::min(K, last / ldw + 1);
  for (int k = 0; k < K; ++k) {
    vec wv{};
    if (k < whole) wv = *reinterpret_cast<const vec*>(w + k * ldw);
    else
      for (int l = 0; l < cols; ++l) wv[l] = w[k * ldw + l];
    for (int r = 0; r < MR; ++r) acc[r] += in[r * ldi + k] * wv;
  }
  for (int r = 0; r < MR; ++r)
    for (int l = 0; l < cols; ++l) out[r * ldo + l] = relu && acc[r][l] < 0.0f ? 0.0f : acc[r][l];
}

}  // namespace

void matmul(float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias, int M, int K,
            int N) {
  // Blocks of MC rows, so that a block of `in` stays in L2 while every column panel of w passes over it.
  constexpr int MC = 20 * DT_MR;
  Prefetch none;
  for (int m0 = 0; m0 < M; m0 += MC) {
    const int mb = M - m0 < MC ? M - m0 : MC;
    float* o = out + static_cast<long>(m0) * ldo;
    const float* a = in + static_cast<long>(m0) * ldi;
    int n = 0;
    for (; n + DT_NV * DT_VEC <= N; n += DT_NV * DT_VEC)
      column_block<DT_NV>(o + n, ldo, a, ldi, w + n, ldw, bias ? bias + n : nullptr, mb, K, false, none);
    for (; n + DT_VEC <= N; n += DT_VEC)
      column_block<1>(o + n, ldo, a, ldi, w + n, ldw, bias ? bias + n : nullptr, mb, K, false, none);
    for (; n < N; ++n) {
      for (int m = 0; m < mb; ++m) {
        float acc = bias ? bias[n] : 0.0f;
        for (int k = 0; k < K; ++k) acc += a[m * ldi + k] * w[k * ldw + n];
        o[m * ldo + n] = acc;
      }
    }
  }
}

extern const int panel_width = DT_NV * DT_VEC;

void matmul_packed(float* out, int ldo, const float* in, int ldi, const float* wp, const float* bias, int M, int K,
                   int N, int n0, int n1, bool relu, Prefetch* prefetch) {
  constexpr int P = DT_NV * DT_VEC, MC = 20 * DT_MR;
  const int nf = N - N % P, rem = N - nf;
  Prefetch pf = prefetch ? *prefetch : Prefetch{};
  const float* wr = wp + static_cast<long>(nf) * K;  // the last, narrower panel: (K, rem) row-major
  for (int m0 = 0; m0 < M; m0 += MC) {
    const int mb = M - m0 < MC ? M - m0 : MC;
    float* o = out + static_cast<long>(m0) * ldo;
    const float* a = in + static_cast<long>(m0) * ldi;
    for (int n = n0; n < n1 && n < nf; n += P)
      column_block<DT_NV>(o + n, ldo, a, ldi, wp + static_cast<long>(n) * K, P, bias ? bias + n : nullptr, mb, K, relu,
                          pf);
    if (n1 <= nf) continue;
    int j = 0;
    for (; j + DT_VEC <= rem; j += DT_VEC)
      column_block<1>(o + nf + j, ldo, a, ldi, wr + j, rem, bias ? bias + nf + j : nullptr, mb, K, relu, pf);
    if (j < rem) {
      const float* b = bias ? bias + nf + j : nullptr;
      int m = 0;
      for (; m + DT_MR <= mb; m += DT_MR)
        narrow_tile<DT_MR>(o + m * ldo + nf + j, ldo, a + m * ldi, ldi, wr + j, rem, rem - j, b, K, relu);
      for (; m < mb; ++m) narrow_tile<1>(o + m * ldo + nf + j, ldo, a + m * ldi, ldi, wr + j, rem, rem - j, b, K, relu);
    }
  }
  if (prefetch) *prefetch = pf;
}

namespace {

using simd::f4;
using simd::hsum;
using simd::hsum_x4;
using simd::vexp;

inline vec load(const float* p) { return *reinterpret_cast<const vec*>(p); }

}  // namespace

void layer_norm(float* out, const float* x, const float* w, const float* b, int n, float eps) {
  const int nv = n - n % DT_VEC;
  vec acc{};
  for (int i = 0; i < nv; i += DT_VEC) acc += load(x + i);
  float sum = hsum(acc);
  for (int i = nv; i < n; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(n);
  vec var_acc{};
  for (int i = 0; i < nv; i += DT_VEC) {
    const vec d = load(x + i) - mean;
    var_acc += d * d;
  }
  float var = hsum(var_acc);
  for (int i = nv; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.0f / std::sqrt(var / static_cast<float>(n) + eps);
  for (int i = 0; i < nv; i += DT_VEC)
    *reinterpret_cast<vec*>(out + i) = (load(x + i) - mean) * inv * load(w + i) + load(b + i);
  for (int i = nv; i < n; ++i) out[i] = (x[i] - mean) * inv * w[i] + b[i];
}

namespace {

typedef int ivec __attribute__((vector_size(DT_VEC * sizeof(int)), aligned(sizeof(int))));

inline vec splat(float x) { return vec{} + x; }

inline ivec load_i(const int* p) { return *reinterpret_cast<const ivec*>(p); }

}  // namespace

void masked_softmax(float* row, const int* dist, int n, int dmin, int dmax, float scale) {
  const int nv = n - n % DT_VEC;
  const ivec lo = ivec{} + dmin, hi = ivec{} + dmax;
  vec mx = splat(-INFINITY);
  for (int j = 0; j < nv; j += DT_VEC) {
    const ivec d = load_i(dist + j);
    mx = (d >= lo) & (d <= hi) & (load(row + j) * scale > mx) ? load(row + j) * scale : mx;
  }
  float m = -INFINITY;
  for (int l = 0; l < DT_VEC; ++l) m = std::max(m, mx[l]);
  for (int j = nv; j < n; ++j)
    if (dist[j] >= dmin && dist[j] <= dmax) m = std::max(m, row[j] * scale);
  vec acc{};
  for (int j = 0; j < nv; j += DT_VEC) {
    const ivec d = load_i(dist + j);
    const vec e = (d >= lo) & (d <= hi) ? vexp(load(row + j) * scale - m) : vec{};
    *reinterpret_cast<vec*>(row + j) = e;
    acc += e;
  }
  float sum = hsum(acc);
  for (int j = nv; j < n; ++j) {
    row[j] = dist[j] >= dmin && dist[j] <= dmax ? std::exp(row[j] * scale - m) : 0.0f;
    sum += row[j];
  }
  const float inv = 1.0f / sum;
  for (int j = 0; j < nv; j += DT_VEC) *reinterpret_cast<vec*>(row + j) = load(row + j) * inv;
  for (int j = nv; j < n; ++j) row[j] *= inv;
}

namespace {

// Rows m0..m0+MB of out against keys n0..n0+NB: MB x NB dot products over K, vectorised along K.
template <int MB, int NB>
inline void dots(float* out, int ldo, const float* a, int lda, const float* b, int ldb, int K) {
  constexpr int kAhead = 2 * NB;  // the keys two blocks ahead are prefetched into L1
  const int kv = K - K % DT_VEC;
  vec acc[MB][NB];
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = vec{};
  for (int k = 0; k < kv; k += DT_VEC) {
    vec bv[NB];
    for (int j = 0; j < NB; ++j)
      prefetch_line<3>(reinterpret_cast<uintptr_t>(b + k) + sizeof(float) * (j + kAhead) * uintptr_t(ldb));
    for (int j = 0; j < NB; ++j) bv[j] = load(b + static_cast<long>(j) * ldb + k);
    for (int i = 0; i < MB; ++i) {
      const vec av = load(a + static_cast<long>(i) * lda + k);
      for (int j = 0; j < NB; ++j) acc[i][j] += av * bv[j];
    }
  }
  for (int i = 0; i < MB; ++i) {
    float sum[NB];
    if constexpr (NB == 4) {
      const f4 s4 = hsum_x4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
      for (int j = 0; j < 4; ++j) sum[j] = s4[j];
    } else {
      for (int j = 0; j < NB; ++j) sum[j] = hsum(acc[i][j]);
    }
    for (int j = 0; j < NB; ++j) {
      for (int k = kv; k < K; ++k) sum[j] += a[static_cast<long>(i) * lda + k] * b[static_cast<long>(j) * ldb + k];
      out[static_cast<long>(i) * ldo + j] = sum[j];
    }
  }
}

// All keys for MB rows: blocks of 4 keys (12 independent accumulators at MB = 3), then one key at a time.
template <int MB>
void dots_rows(float* out, int ldo, const float* a, int lda, const float* b, int ldb, int N, int K) {
  int n = 0;
  for (; n + 4 <= N; n += 4) dots<MB, 4>(out + n, ldo, a, lda, b + static_cast<long>(n) * ldb, ldb, K);
  for (; n < N; ++n) dots<MB, 1>(out + n, ldo, a, lda, b + static_cast<long>(n) * ldb, ldb, K);
}

}  // namespace

void matmul_nt(float* out, int ldo, const float* a, int lda, const float* b, int ldb, int M, int N, int K) {
  int m = 0;
  for (; m + 3 <= M; m += 3)
    dots_rows<3>(out + static_cast<long>(m) * ldo, ldo, a + static_cast<long>(m) * lda, lda, b, ldb, N, K);
  float* o = out + static_cast<long>(m) * ldo;
  if (M - m == 2) dots_rows<2>(o, ldo, a + static_cast<long>(m) * lda, lda, b, ldb, N, K);
  if (M - m == 1) dots_rows<1>(o, ldo, a + static_cast<long>(m) * lda, lda, b, ldb, N, K);
}

}  // namespace DT_KERNEL_NS
}  // namespace dt
