// ThreadPool: see thread_pool.h.
#include "engine/thread_pool.h"

namespace dt {

ThreadPool::ThreadPool(int n_threads) {
  for (int t = 1; t < n_threads; ++t) workers_.emplace_back(&ThreadPool::worker, this, t);
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::chunk(int tid, int64_t& begin, int64_t& end) const {
  const int64_t units = (n_ + align_ - 1) / align_, per = (units + size() - 1) / size();
  begin = std::min(n_, tid * per * align_);
  end = std::min(n_, (tid + 1) * per * align_);
}

void ThreadPool::run(int64_t n, int64_t align, Job job, void* ctx) {
  if (workers_.empty() || n <= align) {
    job(ctx, 0, n, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = job;
    ctx_ = ctx;
    n_ = n;
    align_ = align;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  start_cv_.notify_all();
  int64_t b, e;
  chunk(0, b, e);
  if (b < e) job(ctx, b, e, 0);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
}

void ThreadPool::worker(int tid) {
  uint64_t seen = 0;
  while (true) {
    std::unique_lock<std::mutex> lock(mu_);
    start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    lock.unlock();
    int64_t b, e;
    chunk(tid, b, e);
    if (b < e) job_(ctx_, b, e, tid);
    lock.lock();
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

}  // namespace dt
