// The engine's hotspot: out[M, N] = in[M, K] @ w[K, N] + bias[N], row-major with leading dimensions.
// Three builds of one implementation (kernels_impl.h), each compiled with its own target flags:
// AVX-512, AVX2+FMA, and a portable fallback at the compiler's baseline ISA. kernels_select() picks one at run
// time with __builtin_cpu_supports, so one binary runs on any x86-64.
#pragma once

#include <string>

namespace dt {

// out[m * ldo + n] = bias[n] + sum_k in[m * ldi + k] * w[k * ldw + n]; bias may be null.
using MatmulFn = void (*)(float* out, int ldo, const float* in, int ldi, const float* w, int ldw, const float* bias,
                          int M, int K, int N);

// s[j] = sum_i q[i] * k[j * ldk + i] for j < n, i < d: one query against n keys.
using ScoresFn = void (*)(float* s, const float* q, const float* k, int ldk, int n, int d);
// o[i] = sum_j p[j] * v[j * ldv + i] for i < d, j < n: attention weights times n values.
using ValuesFn = void (*)(float* o, const float* p, const float* v, int ldv, int n, int d);

// out = (x - mean(x)) / sqrt(var(x) + eps) * w + b over n values (biased variance, as torch); out may be x.
using LayerNormFn = void (*)(float* out, const float* x, const float* w, const float* b, int n, float eps);

struct Kernels {
  MatmulFn matmul;
  ScoresFn attn_scores;
  ValuesFn attn_values;
  LayerNormFn layer_norm;
  const char* name;  // "avx512", "avx2" or "generic"
};

#define DT_DECLARE_KERNELS(ns)                                                                    \
  namespace ns {                                                                                  \
  void matmul(float*, int, const float*, int, const float*, int, const float*, int, int, int);    \
  void attn_scores(float*, const float*, const float*, int, int, int);                          \
  void attn_values(float*, const float*, const float*, int, int, int);                          \
  void layer_norm(float*, const float*, const float*, const float*, int, float);                \
  }
DT_DECLARE_KERNELS(avx512)
DT_DECLARE_KERNELS(avx2)
DT_DECLARE_KERNELS(generic)
#undef DT_DECLARE_KERNELS

// "auto" picks the widest the CPU supports; "avx512", "avx2", "generic" force one (throws if unsupported).
Kernels kernels_select(const std::string& isa);

}  // namespace dt
