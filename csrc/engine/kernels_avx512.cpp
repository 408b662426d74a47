// AVX-512 build of kernels_impl.h (compiled with -mavx512f -mfma): 6 x 4 tiles of 16 floats, 24 zmm accumulators.
#define DT_KERNEL_NS avx512
#define DT_VEC 16
#define DT_MR 6
#define DT_NV 4
#include "engine/kernels_impl.h"
