// kernels_select: run-time choice of the matmul build.
#include "engine/kernels.h"

#include "common/check.h"

namespace dt {

namespace {

bool has_avx512() { return __builtin_cpu_supports("avx512f"); }
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

void pack_panels(float* dst, const float* w, int ldw, int K, int N, int panel) {
  const int nf = N - N % panel, rem = N - nf;
  for (int n = 0; n < nf; n += panel)
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < panel; ++j) *dst++ = w[static_cast<long>(k) * ldw + n + j];
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < rem; ++j) *dst++ = w[static_cast<long>(k) * ldw + nf + j];
}

Kernels kernels_select(const std::string& isa) {
  __builtin_cpu_init();
  if (isa == "avx512" || (isa == "auto" && has_avx512())) {
    DT_CHECK(has_avx512(), "isa='avx512' but this CPU does not support AVX-512F");
    return {avx512::matmul,     avx512::matmul_packed,  avx512::matmul_nt, avx512::panel_width,
            avx512::layer_norm, avx512::masked_softmax, "avx512"};
  }
  if (isa == "avx2" || (isa == "auto" && has_avx2())) {
    DT_CHECK(has_avx2(), "isa='avx2' but this CPU does not support AVX2 and FMA");
    return {avx2::matmul,     avx2::matmul_packed,  avx2::matmul_nt, avx2::panel_width,
            avx2::layer_norm, avx2::masked_softmax, "avx2"};
  }
  DT_CHECK(isa == "auto" || isa == "generic", "isa must be 'auto', 'avx512', 'avx2' or 'generic', got '", isa, "'");
  return {generic::matmul,     generic::matmul_packed,  generic::matmul_nt, generic::panel_width,
          generic::layer_norm, generic::masked_softmax, "generic"};
}

}  // namespace dt
