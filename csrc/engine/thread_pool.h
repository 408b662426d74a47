// ThreadPool: persistent workers for fork-join loops over contiguous chunks; the calling thread is worker 0.
// parallel_for allocates nothing (the job is passed as a function pointer + context, not a std::function).
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace dt {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Call fn(begin, end, thread) on `size()` contiguous chunks of [0, n), chunk starts rounded to `align`;
  // returns when every chunk is done.
  template <typename F>
  void parallel_for(int64_t n, int64_t align, F& fn) {
    run(n, align, [](void* ctx, int64_t b, int64_t e, int tid) { (*static_cast<F*>(ctx))(b, e, tid); }, &fn);
  }

 private:
  using Job = void (*)(void*, int64_t, int64_t, int);
  void run(int64_t n, int64_t align, Job job, void* ctx);
  void chunk(int tid, int64_t& begin, int64_t& end) const;
  void worker(int tid);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  Job job_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0, align_ = 1;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace dt
