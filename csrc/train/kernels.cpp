// train_kernels_select: run-time choice of the training kernels' build, by the engine's rule (engine/kernels.cpp).
#include "train/kernels.h"

#include "common/check.h"

namespace dt {

namespace {

#define DT_TRAIN_KERNELS(ns)                                                                                     \
  TrainKernels {                                                                                                 \
    train::ns::layer_norm_forward, train::ns::layer_norm_backward, train::ns::dropout_add_rows,                  \
        train::ns::dropout_rows, train::ns::linear_grad_rows, train::ns::pack_panels_rows, train::ns::transpose, \
        train::ns::matmul_tn, train::ns::transpose_blocks, train::ns::softmax_dropout_row,                       \
        train::ns::softmax_dropout_grad_row, train::ns::matmul_strided, train::ns::embed_rows,                   \
        train::ns::embed_grad_rows, train::ns::adamw, train::ns::sum_squares, train::ns::panel_width, #ns        \
  }

bool has_avx512() { return __builtin_cpu_supports("avx512f"); }
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

TrainKernels train_kernels_select(const std::string& isa) {
  __builtin_cpu_init();
  if (isa == "avx512" || (isa == "auto" && has_avx512())) {
    DT_CHECK(has_avx512(), "isa='avx512' but this CPU does not support AVX-512F");
    return DT_TRAIN_KERNELS(avx512);
  }
  if (isa == "avx2" || (isa == "auto" && has_avx2())) {
    DT_CHECK(has_avx2(), "isa='avx2' but this CPU does not support AVX2 and FMA");
    return DT_TRAIN_KERNELS(avx2);
  }
  DT_CHECK(isa == "auto" || isa == "generic", "isa must be 'auto', 'avx512', 'avx2' or 'generic', got '", isa, "'");
  return DT_TRAIN_KERNELS(generic);
}

}  // namespace dt
