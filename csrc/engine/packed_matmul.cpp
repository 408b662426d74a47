// PackedMatmul: see packed_matmul.h.
#include "engine/packed_matmul.h"

#include <thread>

#include "common/check.h"

namespace dt {

PackedMatmul::PackedMatmul(const float* w, int K, int N, const std::string& isa)
    : kernels_(kernels_select(isa)), K_(K), N_(N) {
  DT_CHECK(K >= 1 && N >= 1, "w must be non-empty, got shape (", K, ", ", N, ")");
  packed_.resize(static_cast<size_t>(K) * N);
  pack_panels(packed_.data(), w, N, K, N, kernels_.panel);
}

void PackedMatmul::operator()(const float* a, int M, float* out, int threads) const {
  DT_CHECK(threads >= 1, "threads must be >= 1, got ", threads);
  DT_CHECK(M >= 0, "a must have M >= 0 rows, got ", M);
  auto part = [&](int i) {  // split as Engine::mm splits its columns
    const auto [n0, n1] = panel_part(i, threads, N_, kernels_.panel);
    if (n0 < n1) kernels_.matmul_packed(out, N_, a, K_, packed_.data(), nullptr, M, K_, N_, n0, n1, false, nullptr);
  };
  std::vector<std::thread> team;
  try {
    for (int i = 1; i < threads; ++i) team.emplace_back(part, i);
  } catch (...) {  // no thread left running (or joinable, which would terminate) when one cannot be started
    for (std::thread& t : team) t.join();
    throw;
  }
  part(0);
  for (std::thread& t : team) t.join();
}

}  // namespace dt
