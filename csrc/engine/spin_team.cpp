// SpinTeam: see spin_team.h. Publication: the caller writes job_ and ctx_, resets done_, then releases next_ = 0;
// a member that claims a part by an acquire fetch_add on next_ therefore sees that job. A part's effects are
// released by done_ and acquired by the caller's wait. The caller returns only when every part is done, so no
// part of a job runs once the next job is being published. A member sleeps only after counting itself in
// sleepers_ under mu_ and re-checking generation_ there, so run() (bump, then notify under mu_ when sleepers_ >
// 0) never loses a wake-up; a late wake-up costs nothing but the member's share.
#include "engine/spin_team.h"

#include <chrono>

namespace dt {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

SpinTeam::SpinTeam(int n_threads) {
  next_.store(n_threads);  // no job yet: nothing to claim
  for (int m = 1; m < n_threads; ++m) workers_.emplace_back(&SpinTeam::worker, this);
}

SpinTeam::~SpinTeam() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void SpinTeam::work() {
  const int parts = size();
  for (int part = next_.fetch_add(1, std::memory_order_acquire); part < parts;
       part = next_.fetch_add(1, std::memory_order_acquire)) {
    job_(ctx_, part);
    done_.fetch_add(1, std::memory_order_release);
  }
}

void SpinTeam::run(Job job, void* ctx) {
  if (workers_.empty()) {
    job(ctx, 0);
    return;
  }
  job_ = job;
  ctx_ = ctx;
  done_.store(0, std::memory_order_relaxed);
  next_.store(0, std::memory_order_release);
  generation_.fetch_add(1);
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    wake_.notify_all();
  }
  work();
  // Wait for parts still running elsewhere; yield once the wait is long (the member holding one was preempted,
  // perhaps by this very thread on a busy machine).
  for (int spins = 0; done_.load(std::memory_order_acquire) < size(); ++spins) {
    if (spins < kYieldAfter) cpu_relax();
    else std::this_thread::yield();
  }
}

void SpinTeam::worker() {
  uint64_t seen = 0;
  while (true) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int64_t idle_since = now_ns(), spins = 0; g == seen && !stop_.load(std::memory_order_relaxed);
         g = generation_.load(std::memory_order_acquire)) {
      cpu_relax();
      if (++spins % kClockEvery != 0 || now_ns() - idle_since < kSpinNs) continue;
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);
      wake_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
      sleepers_.fetch_sub(1);
      idle_since = now_ns();
    }
    if (stop_.load()) return;
    seen = g;
    work();
  }
}

}  // namespace dt
