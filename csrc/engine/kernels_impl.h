// Register-blocked matmul written once with GCC/Clang vector extensions, compiled three times (see kernels.h).
// Include with DT_KERNEL_NS (namespace), DT_VEC (floats per vector), DT_MR (rows per tile), DT_NV (vectors
// per tile) defined. A tile keeps DT_MR x DT_NV accumulators in registers; each k loads DT_NV vectors of w and
// broadcasts DT_MR values of `in`. Column blocks are the outer loop so a (K, DT_NV * DT_VEC) panel of w stays
// in L1 while all row tiles stream past it; the rows left over (< DT_MR) take one more pass, not one each.
// Columns left over (< DT_VEC) are done by a scalar loop. attn_scores and attn_values serve attention;
// layer_norm is torch's (biased variance, two passes).
#include <cmath>

#include "engine/kernels.h"

namespace dt {
namespace DT_KERNEL_NS {

namespace {

typedef float vec __attribute__((vector_size(DT_VEC * sizeof(float)), aligned(sizeof(float))));

template <int MR, int NV>
inline void tile(float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias, int K) {
  vec acc[MR][NV];
  for (int v = 0; v < NV; ++v) {
    vec b = bias ? *reinterpret_cast<const vec*>(bias + v * DT_VEC) : vec{};
    for (int r = 0; r < MR; ++r) acc[r][v] = b;
  }
  for (int k = 0; k < K; ++k) {
    vec wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = *reinterpret_cast<const vec*>(w + k * ldw + v * DT_VEC);
    for (int r = 0; r < MR; ++r) {
      const float a = in[r * ldi + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * wv[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<vec*>(out + r * ldo + v * DT_VEC) = acc[r][v];
}

// The last `rows` (< DT_MR) rows in one pass over w: tile<rows, NV>, the row count chosen at run time.
template <int R, int NV>
inline void tail(int rows, float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias,
                 int K) {
  if constexpr (R > 0) {
    if (rows == R) tile<R, NV>(out, ldo, in, ldi, w, ldw, bias, K);
    else tail<R - 1, NV>(rows, out, ldo, in, ldi, w, ldw, bias, K);
  }
}

// All rows of one column block of NV vectors.
template <int NV>
void column_block(float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias, int M,
                  int K) {
  int m = 0;
  for (; m + DT_MR <= M; m += DT_MR) tile<DT_MR, NV>(out + m * ldo, ldo, in + m * ldi, ldi, w, ldw, bias, K);
  if (m < M) tail<DT_MR - 1, NV>(M - m, out + m * ldo, ldo, in + m * ldi, ldi, w, ldw, bias, K);
}

}  // namespace

void matmul(float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias, int M, int K,
            int N) {
  // Blocks of MC rows, so that a block of `in` stays in L2 while every column panel of w passes over it.
  constexpr int MC = 20 * DT_MR;
  for (int m0 = 0; m0 < M; m0 += MC) {
    const int mb = M - m0 < MC ? M - m0 : MC;
    float* o = out + static_cast<long>(m0) * ldo;
    const float* a = in + static_cast<long>(m0) * ldi;
    int n = 0;
    for (; n + DT_NV * DT_VEC <= N; n += DT_NV * DT_VEC)
      column_block<DT_NV>(o + n, ldo, a, ldi, w + n, ldw, bias ? bias + n : nullptr, mb, K);
    for (; n + DT_VEC <= N; n += DT_VEC)
      column_block<1>(o + n, ldo, a, ldi, w + n, ldw, bias ? bias + n : nullptr, mb, K);
    for (; n < N; ++n) {
      for (int m = 0; m < mb; ++m) {
        float acc = bias ? bias[n] : 0.0f;
        for (int k = 0; k < K; ++k) acc += a[m * ldi + k] * w[k * ldw + n];
        o[m * ldo + n] = acc;
      }
    }
  }
}

namespace {

// Sum of the lanes, pairwise (the compiler turns the halving into extracts and vector adds).
inline float hsum(vec v) {
  float lane[DT_VEC];
  __builtin_memcpy(lane, &v, sizeof(v));
  for (int half = DT_VEC / 2; half >= 1; half /= 2)
    for (int l = 0; l < half; ++l) lane[l] += lane[l + half];
  return lane[0];
}

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

void attn_scores(float* s, const float* q, const float* k, int ldk, int n, int d) {
  const int dv = d - d % DT_VEC;
  int j = 0;
  for (; j + 4 <= n; j += 4) {  // four keys at a time: one horizontal sum per key, four streams in flight
    const float* k0 = k + static_cast<long>(j) * ldk;
    vec a0{}, a1{}, a2{}, a3{};
    for (int i = 0; i < dv; i += DT_VEC) {
      const vec qv = load(q + i);
      a0 += qv * load(k0 + i);
      a1 += qv * load(k0 + ldk + i);
      a2 += qv * load(k0 + 2 * ldk + i);
      a3 += qv * load(k0 + 3 * ldk + i);
    }
    float r[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    for (int u = 0; u < 4; ++u)
      for (int i = dv; i < d; ++i) r[u] += q[i] * k0[u * ldk + i];
    for (int u = 0; u < 4; ++u) s[j + u] = r[u];
  }
  for (; j < n; ++j) {
    const float* kj = k + static_cast<long>(j) * ldk;
    vec a{};
    for (int i = 0; i < dv; i += DT_VEC) a += load(q + i) * load(kj + i);
    float r = hsum(a);
    for (int i = dv; i < d; ++i) r += q[i] * kj[i];
    s[j] = r;
  }
}

void attn_values(float* o, const float* p, const float* v, int ldv, int n, int d) {
  int i = 0;
  for (; i + 4 * DT_VEC <= d; i += 4 * DT_VEC) {  // 4 vectors of the output held in registers over all keys
    vec a0{}, a1{}, a2{}, a3{};
    for (int j = 0; j < n; ++j) {
      const float* vj = v + static_cast<long>(j) * ldv + i;
      a0 += p[j] * load(vj);
      a1 += p[j] * load(vj + DT_VEC);
      a2 += p[j] * load(vj + 2 * DT_VEC);
      a3 += p[j] * load(vj + 3 * DT_VEC);
    }
    *reinterpret_cast<vec*>(o + i) = a0;
    *reinterpret_cast<vec*>(o + i + DT_VEC) = a1;
    *reinterpret_cast<vec*>(o + i + 2 * DT_VEC) = a2;
    *reinterpret_cast<vec*>(o + i + 3 * DT_VEC) = a3;
  }
  for (; i + DT_VEC <= d; i += DT_VEC) {
    vec a{};
    for (int j = 0; j < n; ++j) a += p[j] * load(v + static_cast<long>(j) * ldv + i);
    *reinterpret_cast<vec*>(o + i) = a;
  }
  for (; i < d; ++i) {
    float a = 0.0f;
    for (int j = 0; j < n; ++j) a += p[j] * v[static_cast<long>(j) * ldv + i];
    o[i] = a;
  }
}

}  // namespace DT_KERNEL_NS
}  // namespace dt
