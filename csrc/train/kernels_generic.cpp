// Portable build of the training kernels at the compiler's baseline ISA (SSE2 on x86-64): vectors of 4 floats.
#define DT_KERNEL_NS generic
#define DT_VEC 4
#include "train/kernels_impl.h"
