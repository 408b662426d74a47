// TrainContext: what every training op runs with: the ISA build of the engine's matmul kernels and of the
// training kernels (the same ISA), a team of threads, and scratch buffers kept between calls.
//
// Work is split in chunks that the team's members claim in order from a shared counter, so a member slowed or
// descheduled by another process (the machines are shared; the sampler runs a thread beside the step) takes
// fewer of them instead of making the others wait for a fixed share. One op runs at a time per context: each
// holds lock() while it uses the team and the buffers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/kernels.h"
#include "engine/spin_team.h"
#include "train/kernels.h"

namespace dt {

class TrainContext {
 public:
  // isa: "auto", "avx512", "avx2" or "generic" (kernels_select); threads >= 1, the caller included.
  TrainContext(const std::string& isa, int threads);

  const Kernels& mm() const { return mm_; }
  const TrainKernels& k() const { return k_; }
  int threads() const { return team_.size(); }
  std::unique_lock<std::mutex> lock() { return std::unique_lock<std::mutex>(mu_); }

  // Call fn(chunk, part) once for every chunk in [0, chunks); part in [0, threads()) is the calling member's
  // (for its scratch), and no two calls with one part overlap. fn must not throw.
  template <typename F>
  void parallel(int64_t chunks, F&& fn) {
    if (chunks <= 0) return;
    if (chunks == 1 || team_.size() == 1) {
      for (int64_t c = 0; c < chunks; ++c) fn(c, 0);
      return;
    }
    std::atomic<int64_t> next{0};
    auto member = [&](int part) {
      for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
           c = next.fetch_add(1, std::memory_order_relaxed))
        fn(c, part);
    };
    team_.run(member);
  }

  // A buffer of at least n floats for the use `slot` (kSlots of them), 64-byte aligned, kept and grown between
  // calls: its contents are whatever the last op left.
  enum Slot { kPacked, kTransposed, kPanels, kPartial, kScratch, kSlots };
  float* buffer(Slot slot, size_t n);

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  struct Buffer {
    std::unique_ptr<float, Free> data;
    size_t size = 0;
  };

  Kernels mm_;
  TrainKernels k_;
  SpinTeam team_;
  std::mutex mu_;
  Buffer buffers_[kSlots];
};

}  // namespace dt
