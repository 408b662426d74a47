// The training kernels of kernels.h written once with GCC/Clang vector extensions, compiled three times (as
// csrc/engine/kernels_impl.h). Include with DT_KERNEL_NS (namespace), DT_VEC (floats per vector), DT_MR and DT_NV
// (rows and vectors per tile of matmul_tn) defined.
// Rows are processed a vector at a time with a scalar tail, so any width works (the tests use 36 and 9).
// Dropout masks come from the counter-based hash of dropout.h, computed a vector of counters at a time: the same
// values as dropout_value, element by element.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "common/simd.h"
#include "train/kernels.h"

namespace dt {
namespace train {
namespace DT_KERNEL_NS {

namespace {

typedef float vec __attribute__((vector_size(DT_VEC * sizeof(float)), aligned(sizeof(float))));
typedef uint32_t uvec __attribute__((vector_size(DT_VEC * sizeof(uint32_t)), aligned(sizeof(uint32_t))));
typedef int32_t ivec __attribute__((vector_size(DT_VEC * sizeof(int32_t)), aligned(sizeof(int32_t))));

using simd::hsum;
using simd::splat;
using simd::vexp;

inline vec load(const float* p) { return *reinterpret_cast<const vec*>(p); }
inline void store(float* p, vec v) { *reinterpret_cast<vec*>(p) = v; }

typedef float q4 __attribute__((vector_size(4 * sizeof(float)), aligned(sizeof(float))));  // 4 floats, any address
inline q4 load4(const float* p) { return *reinterpret_cast<const q4*>(p); }
inline void store4(float* p, q4 v) { *reinterpret_cast<q4*>(p) = v; }

inline uvec lane_index() {
  uvec v;
  for (int l = 0; l < DT_VEC; ++l) v[l] = static_cast<uint32_t>(l);
  return v;
}

inline uvec hash32v(uvec x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

typedef uint8_t bytes __attribute__((vector_size(DT_VEC), aligned(1)));

// x[0 .. min(count, DT_VEC)), lanes past count 0.
inline vec load_upto(const float* x, int count) {
  if (count >= DT_VEC) return load(x);
  vec v{};
  for (int l = 0; l < count; ++l) v[l] = x[l];
  return v;
}

// The mask values of elements first .. first + DT_VEC - 1 (dropout_value of each).
inline vec mask_vec(const DropoutKey& k, uint32_t first) {
  const uvec h = hash32v(hash32v((lane_index() + first) ^ k.lo) + k.hi);
  return (h >> 8) >= k.threshold ? splat<vec>(k.scale) : vec{};
}

}  // namespace

void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                        int64_t rows, int n, float eps) {
  const int nv = n - n % DT_VEC;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    vec acc{};
    for (int i = 0; i < nv; i += DT_VEC) acc += load(xr + i);
    float sum = hsum(acc);
    for (int i = nv; i < n; ++i) sum += xr[i];
    const float mu = sum / static_cast<float>(n);
    vec var_acc{};
    for (int i = 0; i < nv; i += DT_VEC) {
      const vec d = load(xr + i) - mu;
      var_acc += d * d;
    }
    float var = hsum(var_acc);
    for (int i = nv; i < n; ++i) var += (xr[i] - mu) * (xr[i] - mu);
    const float inv = 1.0f / std::sqrt(var / static_cast<float>(n) + eps);
    for (int i = 0; i < nv; i += DT_VEC) store(yr + i, (load(xr + i) - mu) * inv * load(w + i) + load(b + i));
    for (int i = nv; i < n; ++i) yr[i] = (xr[i] - mu) * inv * w[i] + b[i];
    mean[r] = mu;
    rstd[r] = inv;
  }
}

void layer_norm_backward(const float* dy, const float* x, const float* w, const float* mean, const float* rstd,
                         float* dx, float* dw, float* db, int64_t rows, int n) {
  const int nv = n - n % DT_VEC;
  const float inv_n = 1.0f / static_cast<float>(n);
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = dy + r * n;
    const float* xr = x + r * n;
    const float mu = mean[r], rs = rstd[r];
    vec a_acc{}, b_acc{};
    for (int i = 0; i < nv; i += DT_VEC) {
      const vec gw = load(g + i) * load(w + i);
      const vec xhat = (load(xr + i) - mu) * rs;
      a_acc += gw;
      b_acc += gw * xhat;
      store(dw + i, load(dw + i) + load(g + i) * xhat);
      store(db + i, load(db + i) + load(g + i));
    }
    float a = hsum(a_acc), bs = hsum(b_acc);
    for (int i = nv; i < n; ++i) {
      const float xhat = (xr[i] - mu) * rs;
      a += g[i] * w[i];
      bs += g[i] * w[i] * xhat;
      dw[i] += g[i] * xhat;
      db[i] += g[i];
    }
    a *= inv_n;
    bs *= inv_n;
    float* d = dx + r * n;
    for (int i = 0; i < nv; i += DT_VEC) {
      const vec xhat = (load(xr + i) - mu) * rs;
      store(d + i, rs * (load(g + i) * load(w + i) - a - xhat * bs));
    }
    for (int i = nv; i < n; ++i) d[i] = rs * (g[i] * w[i] - a - (xr[i] - mu) * rs * bs);
  }
}

void dropout_add_rows(const float* y, const float* residual, float* out, int64_t rows, int cols, const DropoutKey& key,
                      uint32_t first) {
  const int cv = cols - cols % DT_VEC;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * cols;
    const uint32_t f = first + static_cast<uint32_t>(o);
    for (int c = 0; c < cv; c += DT_VEC)
      store(out + o + c, load(residual + o + c) + load(y + o + c) * mask_vec(key, f + static_cast<uint32_t>(c)));
    for (int c = cv; c < cols; ++c)
      out[o + c] = residual[o + c] + y[o + c] * dropout_value(key, f + static_cast<uint32_t>(c));
  }
}

void dropout_rows(const float* x, float* out, int64_t n, const DropoutKey& key, uint32_t first) {
  const int64_t nv = n - n % DT_VEC;
  for (int64_t i = 0; i < nv; i += DT_VEC)
    store(out + i, load(x + i) * mask_vec(key, first + static_cast<uint32_t>(i)));
  for (int64_t i = nv; i < n; ++i) out[i] = x[i] * dropout_value(key, first + static_cast<uint32_t>(i));
}

void linear_grad_rows(const float* dy, const float* y, const DropoutKey* key, uint32_t first, float* g, float* db,
                      int64_t rows, int cols) {
  const int cv = cols - cols % DT_VEC;
  for (int64_t r = 0; r < rows; ++r) {  // row by row, as the arrays lie (they stream from beyond L2)
    const int64_t o = r * cols;
    const uint32_t f = first + static_cast<uint32_t>(o);
    for (int c = 0; c < cv; c += DT_VEC) {
      vec x = load(dy + o + c);
      if (key) x *= mask_vec(*key, f + static_cast<uint32_t>(c));
      // relu: keep where y > 0 as a signed integer (+0 and negatives give 0, as the forward's max(y, 0) did)
      if (y) x = *reinterpret_cast<const ivec*>(y + o + c) > 0 ? x : vec{};
      if (g) store(g + o + c, x);
      store(db + c, load(db + c) + x);
    }
    for (int c = cv; c < cols; ++c) {
      float x = dy[o + c];
      if (key) x *= dropout_value(*key, f + static_cast<uint32_t>(c));
      if (y) {
        int32_t bits;
        std::memcpy(&bits, y + o + c, sizeof bits);
        x = bits > 0 ? x : 0.0f;
      }
      if (g) g[o + c] = x;
      db[c] += x;
    }
  }
}

void pack_panels_rows(const float* src, int64_t lds, int64_t rows, int cols, int P, float* dst, int64_t total_rows,
                      int64_t row0) {
  const int nf = cols - cols % P, rem = cols - nf;
  for (int j = 0; j < nf; j += P) {
    float* d = dst + j * total_rows + row0 * P;
    for (int64_t r = 0; r < rows; ++r)
      for (int c = 0; c < P; c += DT_VEC) store(d + r * P + c, load(src + r * lds + j + c));
  }
  if (rem) {
    float* d = dst + nf * total_rows + row0 * rem;
    for (int64_t r = 0; r < rows; ++r) std::memcpy(d + r * rem, src + r * lds + nf, sizeof(float) * rem);
  }
}

void transpose(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  // Blocks of 4 x 4 through registers. Columns outermost: each destination row is then written front to back in
  // one run (4 at a time), rather than every destination row touched once per 4 source rows (a page each).
  const int64_t rv = rows - rows % 4;
  int64_t c = 0;
  for (; c + 4 <= cols; c += 4) {
    float* d = dst + c * ldd;
    for (int64_t r = 0; r < rv; r += 4) {  // source rows a, b, e, f become destination columns
      const float* s = src + r * lds + c;
      const q4 a = load4(s), b = load4(s + lds), e = load4(s + 2 * lds), f = load4(s + 3 * lds);
      const q4 ab_lo = __builtin_shufflevector(a, b, 0, 4, 1, 5), ab_hi = __builtin_shufflevector(a, b, 2, 6, 3, 7);
      const q4 ef_lo = __builtin_shufflevector(e, f, 0, 4, 1, 5), ef_hi = __builtin_shufflevector(e, f, 2, 6, 3, 7);
      store4(d + r, __builtin_shufflevector(ab_lo, ef_lo, 0, 1, 4, 5));
      store4(d + ldd + r, __builtin_shufflevector(ab_lo, ef_lo, 2, 3, 6, 7));
      store4(d + 2 * ldd + r, __builtin_shufflevector(ab_hi, ef_hi, 0, 1, 4, 5));
      store4(d + 3 * ldd + r, __builtin_shufflevector(ab_hi, ef_hi, 2, 3, 6, 7));
    }
    for (int64_t r = rv; r < rows; ++r)
      for (int i = 0; i < 4; ++i) d[i * ldd + r] = src[r * lds + c + i];
  }
  for (; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) dst[c * ldd + r] = src[r * lds + c];
}

namespace {

// Lanes of the butterfly transpose's stage H (a power of 2 below DT_VEC) on rows a and b = a's row + H: lanes j
// without bit H take a[j] (lo) or a[j + H] (hi), lanes with it take b[j - H] (lo) or b[j] (hi).
template <int H, std::size_t... J>
inline vec butterfly_lo(vec a, vec b, std::index_sequence<J...>) {
  return __builtin_shufflevector(a, b, ((J & H) ? DT_VEC + J - H : J)...);
}

template <int H, std::size_t... J>
inline vec butterfly_hi(vec a, vec b, std::index_sequence<J...>) {
  return __builtin_shufflevector(a, b, ((J & H) ? DT_VEC + J : J + H)...);
}

// DT_VEC x DT_VEC values in registers transposed in place: stages H = DT_VEC / 2, ..., 1 exchange the blocks of H
// lanes between rows H apart.
template <int H>
inline void butterfly(vec* r) {
  if constexpr (H > 0) {
    for (int i = 0; i < DT_VEC; ++i)
      if (!(i & H)) {
        const vec a = r[i], b = r[i + H];
        r[i] = butterfly_lo<H>(a, b, std::make_index_sequence<DT_VEC>{});
        r[i + H] = butterfly_hi<H>(a, b, std::make_index_sequence<DT_VEC>{});
      }
    butterfly<H / 2>(r);
  }
}

}  // namespace

void transpose_blocks(const float* src, int64_t lds, float* dst, int64_t ldd, int rows, int cols) {
  const int cv = cols - cols % DT_VEC, rp = (rows + DT_VEC - 1) / DT_VEC * DT_VEC;
  for (int r0 = 0; r0 < rows; r0 += DT_VEC) {
    const int nr = std::min(DT_VEC, rows - r0);
    for (int c0 = 0; c0 < cv; c0 += DT_VEC) {
      vec r[DT_VEC];
      for (int i = 0; i < DT_VEC; ++i) r[i] = i < nr ? load(src + (r0 + i) * lds + c0) : vec{};
      butterfly<DT_VEC / 2>(r);
      for (int i = 0; i < DT_VEC; ++i) store(dst + (c0 + i) * ldd + r0, r[i]);
    }
  }
  for (int c = cv; c < cols; ++c) {
    for (int r = 0; r < rows; ++r) dst[c * ldd + r] = src[r * lds + c];
    for (int r = rows; r < rp; ++r) dst[c * ldd + r] = 0.0f;
  }
}

void softmax_dropout_row(float* s, const uint8_t* allowed, int lo, int hi, float* probs, float* out, int t, float scale,
                         const DropoutKey& key, uint32_t first) {
  // Vectors from lo; the last one reaches into the padding of s (and allowed): its lanes from hi on count as not
  // allowed, and their exponentials are 0.
  const int n = hi - lo, end = n > 0 ? lo + (n + DT_VEC - 1) / DT_VEC * DT_VEC : 0;
  if (n <= 0) {  // no key: zero output and gradient, as SDPA
    std::memset(probs, 0, sizeof(float) * t);
    std::memset(out, 0, sizeof(float) * t);
    return;
  }
  std::memset(probs, 0, sizeof(float) * lo);
  std::memset(out, 0, sizeof(float) * lo);
  if (end < t) {
    std::memset(probs + end, 0, sizeof(float) * (t - end));
    std::memset(out + end, 0, sizeof(float) * (t - end));
  }
  const ivec lane = __builtin_convertvector(lane_index(), ivec);
  auto ok = [&](int j) {
    const ivec in = lane < n - j;
    return allowed ? in & (__builtin_convertvector(*reinterpret_cast<const bytes*>(allowed + lo + j), ivec) != 0) : in;
  };
  vec mxv = splat<vec>(-INFINITY);
  for (int j = 0; j < n; j += DT_VEC) {
    const vec v = load(s + lo + j) * scale;
    mxv = ok(j) & (v > mxv) ? v : mxv;
  }
  float mx = mxv[0];
  for (int l = 1; l < DT_VEC; ++l) mx = mxv[l] > mx ? mxv[l] : mx;
  vec acc{};
  for (int j = 0; j < n; j += DT_VEC) {
    const vec e = ok(j) != 0 ? vexp(load(s + lo + j) * scale - mx) : vec{};
    acc += e;
    store(s + lo + j, e);
  }
  const float inv = 1.0f / hsum(acc);
  for (int j = lo; j < end; j += DT_VEC) {
    const vec p = load(s + j) * inv;
    const vec o = p * mask_vec(key, first + static_cast<uint32_t>(j));
    if (j + DT_VEC <= t) {
      store(probs + j, p);
      store(out + j, o);
    } else {
      for (int l = 0; l < t - j; ++l) probs[j + l] = p[l], out[j + l] = o[l];
    }
  }
}

void softmax_dropout_grad_row(float* g, const float* probs, const float* out, int lo, int hi, int t, float scale) {
  // Vectors from lo; lanes from hi on are 0 (the padding of g may hold anything, probs and out are 0 there).
  const int n = hi - lo, end = n > 0 ? lo + (n + DT_VEC - 1) / DT_VEC * DT_VEC : 0;
  if (n <= 0) {
    std::memset(g, 0, sizeof(float) * t);
    return;
  }
  std::memset(g, 0, sizeof(float) * lo);
  if (end < t) std::memset(g + end, 0, sizeof(float) * (t - end));
  const ivec lane = __builtin_convertvector(lane_index(), ivec);
  vec acc{};
  for (int j = 0; j < n; j += DT_VEC)
    acc += lane < n - j ? load(g + lo + j) * load_upto(out + lo + j, t - lo - j) : vec{};
  const float dot = hsum(acc);
  for (int j = 0; j < n; j += DT_VEC) {
    const vec v = scale * (load(g + lo + j) * load_upto(out + lo + j, t - lo - j) -
                           load_upto(probs + lo + j, t - lo - j) * dot);
    store(g + lo + j, lane < n - j ? v : vec{});
  }
}

namespace {

// The register tiles of matmul_strided and matmul_tn: DT_MR rows of out by DT_NV vectors of columns, as the
// engine's matmul (24 accumulators of AVX-512's 32 registers, 12 of AVX2's 16, 8 of SSE's 16).

// MR rows by NV vectors of out over all K: each k loads NV vectors of w and broadcasts MR values of a; the sums are
// stored, or added to out (accumulate). (Written so that GCC keeps the accumulators in registers from the start:
// with a loop to zero them and indexed pointers, it copies them through the stack on entry and exit.)
template <int MR, int NV>
inline void mm_tile(float* out, int ldo, const float* a, int sm, int sk, const float* w, int ldw, int K,
                    bool accumulate) {
  vec acc[MR][NV] = {};
  const float* ak = a;
  const float* wk = w;
  for (int k = 0; k < K; ++k, ak += sk, wk += ldw) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const vec x = splat<vec>(ak[static_cast<int64_t>(r) * sm]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += x * load(wk + v * DT_VEC);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      float* o = out + static_cast<int64_t>(r) * ldo + v * DT_VEC;
      store(o, accumulate ? load(o) + acc[r][v] : acc[r][v]);
    }
}

// The last `rows` (< DT_MR) rows: mm_tile<rows, NV>, the row count chosen at run time.
template <int R, int NV>
inline void mm_row_tail(int rows, float* out, int ldo, const float* a, int sm, int sk, const float* w, int ldw, int K,
                        bool accumulate) {
  if constexpr (R > 0) {
    if (rows == R) mm_tile<R, NV>(out, ldo, a, sm, sk, w, ldw, K, accumulate);
    else mm_row_tail<R - 1, NV>(rows, out, ldo, a, sm, sk, w, ldw, K, accumulate);
  }
}

// All M rows of one block of NV vectors of columns.
template <int NV>
void mm_columns(float* out, int ldo, const float* a, int sm, int sk, const float* w, int ldw, int M, int K,
                bool accumulate) {
  int m = 0;
  for (; m + DT_MR <= M; m += DT_MR)
    mm_tile<DT_MR, NV>(out + static_cast<int64_t>(m) * ldo, ldo, a + static_cast<int64_t>(m) * sm, sm, sk, w, ldw, K,
                       accumulate);
  if (m < M)
    mm_row_tail<DT_MR - 1, NV>(M - m, out + static_cast<int64_t>(m) * ldo, ldo, a + static_cast<int64_t>(m) * sm, sm,
                               sk, w, ldw, K, accumulate);
}

// The last `vecs` (< DT_NV) vectors of columns in one block: mm_columns<vecs>, chosen at run time.
template <int V>
inline void mm_column_tail(int vecs, float* out, int ldo, const float* a, int sm, int sk, const float* w, int ldw,
                           int M, int K, bool accumulate) {
  if constexpr (V > 0) {
    if (vecs == V) mm_columns<V>(out, ldo, a, sm, sk, w, ldw, M, K, accumulate);
    else mm_column_tail<V - 1>(vecs, out, ldo, a, sm, sk, w, ldw, M, K, accumulate);
  }
}

// out (=, or += when accumulate) a w over all N columns: whole tiles, then the columns left over.
void mm_product(float* out, int ldo, const float* a, int sm, int sk, const float* w, int ldw, int M, int K, int N,
                bool accumulate) {
  int n = 0;
  for (; n + DT_NV * DT_VEC <= N; n += DT_NV * DT_VEC)
    mm_columns<DT_NV>(out + n, ldo, a, sm, sk, w + n, ldw, M, K, accumulate);
  if (const int vecs = (N - n) / DT_VEC; vecs > 0) {
    mm_column_tail<DT_NV - 1>(vecs, out + n, ldo, a, sm, sk, w + n, ldw, M, K, accumulate);
    n += vecs * DT_VEC;
  }
  for (; n < N; ++n)
    for (int m = 0; m < M; ++m) {
      float acc = 0.0f;
      for (int k = 0; k < K; ++k)
        acc += a[static_cast<int64_t>(m) * sm + static_cast<int64_t>(k) * sk] * w[static_cast<int64_t>(k) * ldw + n];
      float* o = out + static_cast<int64_t>(m) * ldo + n;
      *o = accumulate ? *o + acc : acc;
    }
}

}  // namespace

void matmul_strided(float* out, int ldo, const float* a, int sm, int sk, const float* w, int ldw, int M, int K, int N) {
  mm_product(out, ldo, a, sm, sk, w, ldw, M, K, N, false);
}

extern const int panel_width = DT_NV * DT_VEC;

void matmul_tn(float* out, int64_t ldo, const float* a, int64_t lda, const float* bp, int64_t K, int rows, int N,
               int n0, int n1, bool accumulate) {
  // A^T is a read with strides (1, lda); each panel of B is a (K, P) row-major matrix, the last one (K, N % P).
  constexpr int P = DT_NV * DT_VEC;
  const int nf = N - N % P, ld = static_cast<int>(ldo), sk = static_cast<int>(lda), k = static_cast<int>(K);
  for (int n = n0; n < n1 && n < nf; n += P) mm_product(out + n, ld, a, 1, sk, bp + n * K, P, rows, k, P, accumulate);
  if (n1 > nf && N > nf) mm_product(out + nf, ld, a, 1, sk, bp + nf * K, N - nf, rows, k, N - nf, accumulate);
}

void embed_rows(const float* states, const float* actions, const float* rtg, const int64_t* timesteps,
                const EmbedWeights& w, float* x, int64_t rows, int S, int A, int C) {
  const int cv = C - C % DT_VEC;
  for (int64_t n = 0; n < rows; ++n) {
    const float* time = w.table + timesteps[n] * C;
    const float* s = states + n * S;
    const float* a = actions + n * A;
    float* xr = x + 3 * n * C;
    for (int c = 0; c < cv; c += DT_VEC) {
      const vec e = load(time + c);
      vec hs = load(w.b_state + c) + e, ha = load(w.b_action + c) + e;
      for (int k = 0; k < S; ++k) hs += s[k] * load(w.wt_state + k * C + c);
      for (int k = 0; k < A; ++k) ha += a[k] * load(w.wt_action + k * C + c);
      store(xr + c, rtg[n] * load(w.w_return + c) + load(w.b_return + c) + e);
      store(xr + C + c, hs);
      store(xr + 2 * C + c, ha);
    }
    for (int c = cv; c < C; ++c) {
      float hs = w.b_state[c] + time[c], ha = w.b_action[c] + time[c];
      for (int k = 0; k < S; ++k) hs += s[k] * w.wt_state[k * C + c];
      for (int k = 0; k < A; ++k) ha += a[k] * w.wt_action[k * C + c];
      xr[c] = rtg[n] * w.w_return[c] + w.b_return[c] + time[c];
      xr[C + c] = hs;
      xr[2 * C + c] = ha;
    }
  }
}

void embed_grad_rows(const float* dx, const float* states, const float* actions, const float* rtg, float* acc,
                     int64_t rows, int S, int A, int C) {
  float* dw_r = acc;
  float* db_r = dw_r + C;
  float* dwt_s = db_r + C;
  float* db_s = dwt_s + S * C;
  float* dwt_a = db_s + C;
  float* db_a = dwt_a + A * C;
  const int cv = C - C % DT_VEC;
  for (int64_t n = 0; n < rows; ++n) {
    const float* g = dx + 3 * n * C;
    const float* s = states + n * S;
    const float* a = actions + n * A;
    for (int c = 0; c < cv; c += DT_VEC) {
      const vec gr = load(g + c), gs = load(g + C + c), ga = load(g + 2 * C + c);
      store(dw_r + c, load(dw_r + c) + rtg[n] * gr);
      store(db_r + c, load(db_r + c) + gr);
      for (int k = 0; k < S; ++k) store(dwt_s + k * C + c, load(dwt_s + k * C + c) + s[k] * gs);
      store(db_s + c, load(db_s + c) + gs);
      for (int k = 0; k < A; ++k) store(dwt_a + k * C + c, load(dwt_a + k * C + c) + a[k] * ga);
      store(db_a + c, load(db_a + c) + ga);
    }
    for (int c = cv; c < C; ++c) {
      dw_r[c] += rtg[n] * g[c];
      db_r[c] += g[c];
      for (int k = 0; k < S; ++k) dwt_s[k * C + c] += s[k] * g[C + c];
      db_s[c] += g[C + c];
      for (int k = 0; k < A; ++k) dwt_a[k * C + c] += a[k] * g[2 * C + c];
      db_a[c] += g[2 * C + c];
    }
  }
}

void adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s) {
  const float decay = 1.0f - s.lr * s.weight_decay, step_size = s.lr / s.bias_correction1;
  const float inv_bc2 = 1.0f / s.bias_correction2_sqrt, b1 = 1.0f - s.beta1, b2 = 1.0f - s.beta2;
  const int64_t nv = n - n % DT_VEC;
  for (int64_t i = 0; i < nv; i += DT_VEC) {
    const vec gi = load(g + i) * s.grad_scale;
    const vec mi = load(m + i) * s.beta1 + gi * b1;
    const vec vi = load(v + i) * s.beta2 + gi * gi * b2;
    vec root;
    for (int l = 0; l < DT_VEC; ++l) root[l] = std::sqrt(vi[l]);
    store(m + i, mi);
    store(v + i, vi);
    store(p + i, load(p + i) * decay - step_size * mi / (root * inv_bc2 + s.eps));
  }
  for (int64_t i = nv; i < n; ++i) {
    const float gi = g[i] * s.grad_scale;
    m[i] = m[i] * s.beta1 + gi * b1;
    v[i] = v[i] * s.beta2 + gi * gi * b2;
    p[i] = p[i] * decay - step_size * m[i] / (std::sqrt(v[i]) * inv_bc2 + s.eps);
  }
}

double sum_squares(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;  // float partial sums over blocks, added in double
  double total = 0.0;
  for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
    const int64_t b1 = b0 + kBlock < n ? b0 + kBlock : n;
    const int64_t bv = b0 + (b1 - b0) - (b1 - b0) % DT_VEC;
    vec acc{};
    for (int64_t i = b0; i < bv; i += DT_VEC) acc += load(x + i) * load(x + i);
    float sum = hsum(acc);
    for (int64_t i = bv; i < b1; ++i) sum += x[i] * x[i];
    total += sum;
  }
  return total;
}

}  // namespace DT_KERNEL_NS
}  // namespace train
}  // namespace dt
