// kernels_select: run-time choice of the matmul build.
#include "engine/kernels.h"

#include "common/check.h"

namespace dt {

namespace {

bool has_avx512() { return __builtin_cpu_supports("avx512f"); }
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

Kernels kernels_select(const std::string& isa) {
  __builtin_cpu_init();
  if (isa == "avx512" || (isa == "auto" && has_avx512())) {
    DT_CHECK(has_avx512(), "isa='avx512' but this CPU does not support AVX-512F");
    return {avx512::matmul, avx512::attn_scores, avx512::attn_values, avx512::layer_norm, "avx512"};
  }
  if (isa == "avx2" || (isa == "auto" && has_avx2())) {
    DT_CHECK(has_avx2(), "isa='avx2' but this CPU does not support AVX2 and FMA");
    return {avx2::matmul, avx2::attn_scores, avx2::attn_values, avx2::layer_norm, "avx2"};
  }
  DT_CHECK(isa == "auto" || isa == "generic", "isa must be 'auto', 'avx512', 'avx2' or 'generic', got '", isa, "'");
  return {generic::matmul, generic::attn_scores, generic::attn_values, generic::layer_norm, "generic"};
}

}  // namespace dt
