// Portable build of the training kernels at the compiler's baseline ISA (SSE2 on x86-64): vectors of 4 floats,
// matmul_tn in 4 x 2 tiles of them (the engine's shape).
#define DT_KERNEL_NS generic
#define DT_VEC 4
#define DT_MR 4
#define DT_NV 2
#include "train/kernels_impl.h"
