// ThreadPool: persistent workers for fork-join jobs; the calling thread is worker 0. run() calls a function once
// on every worker and returns when all are done; the function shares out the work itself (Engine::step claims
// chunks of rows from an atomic counter, so a thread slowed by another process takes fewer of them).
// run allocates nothing (the job is passed as a function pointer + context, not a std::function).
#pragma once

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

  // Call fn(thread) on every worker, thread in [0, size()); returns when every call has returned.
  template <typename F>
  void run(F& fn) {
    dispatch([](void* ctx, int tid) { (*static_cast<F*>(ctx))(tid); }, &fn);
  }

 private:
  using Job = void (*)(void*, int);
  void dispatch(Job job, void* ctx);
  void worker(int tid);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  Job job_ = nullptr;
  void* ctx_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace dt
