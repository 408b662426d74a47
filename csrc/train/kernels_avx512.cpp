// AVX-512 build of the training kernels (compiled with -mavx512f -mfma): vectors of 16 floats.
#define DT_KERNEL_NS avx512
#define DT_VEC 16
#include "train/kernels_impl.h"
