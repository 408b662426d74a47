// AVX2+FMA build of the training kernels (compiled with -mavx2 -mfma): vectors of 8 floats.
#define DT_KERNEL_NS avx2
#define DT_VEC 8
#include "train/kernels_impl.h"
