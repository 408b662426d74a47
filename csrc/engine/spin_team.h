// SpinTeam: threads that split one job into `size()` parts many times a step, for batch-1 latency. The calling
// thread takes parts too, and every part not yet claimed when it is done with its own: a member that is asleep,
// descheduled or late never makes the caller wait, it only loses its share (the caller then runs at one-thread
// speed). Idle members spin (a fork-join costs well under a microsecond, waking a sleeping thread tens) and
// sleep on a condition variable after kSpinNs without work, so an idle engine does not hold a core.
// run() allocates nothing.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace dt {

class SpinTeam {
 public:
  explicit SpinTeam(int n_threads);
  ~SpinTeam();
  SpinTeam(const SpinTeam&) = delete;
  SpinTeam& operator=(const SpinTeam&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Call fn(part) for every part in [0, size()), each once, on whichever members claim them (the caller claims
  // part 0 first); returns when all are done.
  template <typename F>
  void run(F& fn) {
    run(+[](void* ctx, int part) { (*static_cast<F*>(ctx))(part); }, &fn);
  }

 private:
  using Job = void (*)(void*, int);
  static constexpr int64_t kSpinNs = 1'000'000;  // idle members sleep after 1 ms without a job
  static constexpr int kYieldAfter = 4096;       // pauses (a few microseconds) before run() yields while waiting
  static constexpr int kClockEvery = 1024;       // pauses between two reads of the clock by an idle member

  void run(Job job, void* ctx);
  void work();  // claim and run parts of the current job until none is left
  void worker();

  std::vector<std::thread> workers_;
  Job job_ = nullptr;
  void* ctx_ = nullptr;
  std::atomic<int> next_{0};             // next unclaimed part of the current job
  std::atomic<int> done_{0};             // parts of the current job finished
  std::atomic<uint64_t> generation_{0};  // bumped once per job
  std::atomic<int> sleepers_{0};         // members waiting on wake_
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
};

}  // namespace dt
