// Portable build of kernels_impl.h at the compiler's baseline ISA (SSE2 on x86-64): 4 x 2 tiles of 4 floats.
#define DT_KERNEL_NS generic
#define DT_VEC 4
#define DT_MR 4
#define DT_NV 2
#include "engine/kernels_impl.h"
