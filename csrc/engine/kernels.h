// The engine's hotspot: out[M, N] = in[M, K] @ w[K, N] + bias[N], row-major with leading dimensions.
// Three builds of one implementation (kernels_impl.h), each compiled with its own target flags:
// AVX-512, AVX2+FMA, and a portable fallback at the compiler's baseline ISA. kernels_select() picks one at run
// time with __builtin_cpu_supports, so one binary runs on any x86-64.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

namespace dt {

// out[m * ldo + n] = bias[n] + sum_k in[m * ldi + k] * w[k * ldw + n]; bias may be null.
using MatmulFn = void (*)(float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias,
                          int M, int K, int N);

// Memory to bring into cache while a matmul computes: the lines [next, end), one per k step of the matmul's
// register tiles, `next` advanced as they are issued. The engine fetches the cache rows of its next attention
// this way, under the matmuls that come before it, instead of waiting for them when attention reads them.
// Addresses are integers: the last line issued may end past `end` (a hint never faults).
struct Prefetch {
  uintptr_t next = 0;
  uintptr_t end = 0;
};

// The same product with w packed by pack_panels(w, K, N, panel): columns [n0, n1) only, n0 a multiple of the
// panel width (a split point between threads) and n1 one too, or N.
// relu: out = max(out, 0) after the bias (the MLP's activation fused into the store). pf: lines to prefetch, or
// null.
using MatmulPackedFn = void (*)(float* out, int ldo, const float* in, int ldi, const float* wp, const float* bias,
                                int M, int K, int N, int n0, int n1, bool relu, Prefetch* pf);

// out = (x - mean(x)) / sqrt(var(x) + eps) * w + b over n values (biased variance, as torch); out may be x.
using LayerNormFn = void (*)(float* out, const float* x, const float* w, const float* b, int n, float eps);

// out[m * ldo + n] = sum_k a[m * lda + k] * b[n * ldb + k]: every row of a against every row of b (attention
// scores against keys stored one per row).
using MatmulNtFn = void (*)(float* out, int ldo, const float* a, int lda, const float* b, int ldb, int M, int N, int K);

// Attention weights of one query in place: row[j] = softmax over the keys j with dmin <= dist[j] <= dmax of
// scale * row[j], and 0 for every other j (n values; at least one key must pass). exp is a polynomial within
// 2 ulp of expf.
using MaskedSoftmaxFn = void (*)(float* row, const int* dist, int n, int dmin, int dmax, float scale);

struct Kernels {
  MatmulFn matmul;
  MatmulPackedFn matmul_packed;
  MatmulNtFn matmul_nt;
  int panel;  // columns per panel of matmul_packed's weight layout
  LayerNormFn layer_norm;
  MaskedSoftmaxFn masked_softmax;
  const char* name;  // "avx512", "avx2" or "generic"
};

#define DT_DECLARE_KERNELS(ns)                                                                                  \
  namespace ns {                                                                                                \
  void matmul(float*, int, const float*, int, const float*, int, const float*, int, int, int);                  \
  void matmul_packed(float*, int, const float*, int, const float*, const float*, int, int, int, int, int, bool, \
                     Prefetch*);                                                                                \
  extern const int panel_width;                                                                                 \
  void layer_norm(float*, const float*, const float*, const float*, int, float);                                \
  void masked_softmax(float*, const int*, int, int, int, float);                                                \
  void matmul_nt(float*, int, const float*, int, const float*, int, int, int, int);                             \
  }
DT_DECLARE_KERNELS(avx512)
DT_DECLARE_KERNELS(avx2)
DT_DECLARE_KERNELS(generic)
#undef DT_DECLARE_KERNELS

// w (K, N) row-major with leading dimension ldw, written to dst (K * N floats) as panels of `panel` columns:
// panel j is w[:, j * panel : (j + 1) * panel], K rows of `panel` floats one after another; the columns left over
// (N % panel) form a last panel (K, N % panel), also row-major.
void pack_panels(float* dst, const float* w, int ldw, int K, int N, int panel);

// Part i of T of the columns of a (K, N) matrix packed in panels, as [n0, n1): a contiguous run of whole panels
// (the last part ends at N), the split matmul_packed accepts.
inline std::pair<int, int> panel_part(int i, int T, int N, int panel) {
  const int panels = (N + panel - 1) / panel;
  const int n0 = std::min(N, i * panels / T * panel);
  return {n0, i == T - 1 ? N : std::min(N, (i + 1) * panels / T * panel)};
}

// "auto" picks the widest the CPU supports; "avx512", "avx2", "generic" force one (throws if unsupported).
Kernels kernels_select(const std::string& isa);

}  // namespace dt
