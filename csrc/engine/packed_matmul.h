// PackedMatmul: one weight matrix w (K, N) packed once for the engine's matmul kernel (kernels.h, pack_panels),
// then out = a @ w with the columns split over threads as Engine::mm splits them (panel_part). Benchmarks time it
// for this machine's matmul rate (benchmarks/harness.py); tests check the kernel against numpy with it.
#pragma once

#include <string>
#include <vector>

#include "engine/kernels.h"

namespace dt {

class PackedMatmul {
 public:
  // w (K, N) row-major, K and N >= 1; isa: see kernels_select. Throws std::invalid_argument on bad arguments.
  PackedMatmul(const float* w, int K, int N, const std::string& isa = "auto");

  // out (M, N) = a (M, K) @ w, the columns split over `threads` >= 1 threads (the caller's and threads - 1 started
  // for this call). Concurrent calls are safe: the packed weights are only read.
  void operator()(const float* a, int M, float* out, int threads) const;

  int K() const { return K_; }
  int N() const { return N_; }
  const char* isa() const { return kernels_.name; }

 private:
  Kernels kernels_;
  int K_, N_;
  std::vector<float> packed_;  // (K * N) in panels of kernels_.panel columns
};

}  // namespace dt
