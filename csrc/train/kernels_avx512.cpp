// AVX-512 build of the training kernels (compiled with -mavx512f -mfma): vectors of 16 floats, matmul_tn in 6 x 4
// tiles of them (the engine's shape).
#define DT_KERNEL_NS avx512
#define DT_VEC 16
#define DT_MR 6
#define DT_NV 4
#include "train/kernels_impl.h"
