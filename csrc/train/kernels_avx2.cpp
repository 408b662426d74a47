// AVX2+FMA build of the training kernels (compiled with -mavx2 -mfma): vectors of 8 floats, matmul_tn in 6 x 2 tiles
// of them (the engine's shape).
#define DT_KERNEL_NS avx2
#define DT_VEC 8
#define DT_MR 6
#define DT_NV 2
#include "train/kernels_impl.h"
