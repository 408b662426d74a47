// AVX2+FMA build of kernels_impl.h (compiled with -mavx2 -mfma): 6 x 2 tiles of 8 floats, 12 ymm accumulators.
#define DT_KERNEL_NS avx2
#define DT_VEC 8
#define DT_MR 6
#define DT_NV 2
#include "engine/kernels_impl.h"
