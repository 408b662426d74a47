// TrainContext: what every training op runs with: the ISA build of the engine's matmul kernels and of the
// training kernels (the same ISA), a team of threads, and scratch buffers kept between calls.
//
// Work is split in chunks. Each member of the team first claims, in order, the chunks of its own contiguous share
// of [0, chunks), the same share in every op: the rows one op wrote are then mostly read by the same core in the
// next, from its own cache (the caller always runs part 0, so with two threads each core keeps its rows). Then it
// claims what is left of the others' shares, so a member slowed or descheduled by another process (the machines
// are shared; the sampler runs a thread beside the step) takes fewer chunks instead of making the others wait for
// its share. One op runs at a time per context: each holds lock() while it uses the team, the buffers and the
// chunk cursors.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
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
  // (for its scratch), and no two calls with one part overlap. Part p owns chunks [chunks p / n, chunks (p + 1) / n)
  // of n = threads() parts. fn must not throw.
  template <typename F>
  void parallel(int64_t chunks, F&& fn) {
    if (chunks <= 0) return;
    const int parts = team_.size();
    if (chunks == 1 || parts == 1) {
      for (int64_t c = 0; c < chunks; ++c) fn(c, 0);
      return;
    }
    for (int p = 0; p < parts; ++p) cursors_[p].next.store(chunks * p / parts, std::memory_order_relaxed);
    auto member = [&](int part) {
      for (int k = 0; k < parts; ++k) {
        const int owner = (part + k) % parts;
        const int64_t end = chunks * (owner + 1) / parts;
        std::atomic<int64_t>& next = cursors_[owner].next;
        for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < end;
             c = next.fetch_add(1, std::memory_order_relaxed))
          fn(c, part);
      }
    };
    team_.run(member);
  }

  // Seconds spent per op family inside the composite ops (block.h), summed while profiling is on (the ops inside a
  // single call are invisible to torch.profiler); turning it on resets the sums.
  enum Family { kGemm, kAttention, kElementwise, kFamilies };
  void set_profiling(bool on) {
    profiling_ = on;
    if (on) seconds_.fill(0.0);
  }
  bool profiling() const { return profiling_; }
  const std::array<double, kFamilies>& seconds() const { return seconds_; }
  void add_seconds(Family f, double s) { seconds_[f] += s; }

  // A buffer of at least n floats for the use `slot` (kSlots of them), 64-byte aligned, kept and grown between
  // calls: its contents are whatever the last op left.
  enum Slot { kPacked, kPanels, kPartial, kScratch, kBlock, kSlots };
  float* buffer(Slot slot, size_t n);

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  struct Buffer {
    std::unique_ptr<float, Free> data;
    size_t size = 0;
  };

  struct alignas(64) Cursor {  // the next unclaimed chunk of one part's share, on a cache line of its own
    std::atomic<int64_t> next{0};
  };

  Kernels mm_;
  TrainKernels k_;
  SpinTeam team_;
  std::unique_ptr<Cursor[]> cursors_;
  std::mutex mu_;
  Buffer buffers_[kSlots];
  bool profiling_ = false;
  std::array<double, kFamilies> seconds_{};
};

// Charges the time since the previous charge (or construction) to an op family of ctx, when it is profiling.
class FamilyClock {
 public:
  explicit FamilyClock(TrainContext& ctx) : ctx_(ctx), last_(now()) {}
  void charge(TrainContext::Family f) {
    if (!ctx_.profiling()) return;
    const auto t = now();
    ctx_.add_seconds(f, std::chrono::duration<double>(t - last_).count());
    last_ = t;
  }

 private:
  static std::chrono::steady_clock::time_point now() { return std::chrono::steady_clock::now(); }
  TrainContext& ctx_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace dt
