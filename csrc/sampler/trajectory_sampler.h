// Training windows of the blog's collator, built from flat episode arrays by a counter-based RNG.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "sampler/huge_pages.h"

namespace dt {

struct SamplerOptions {
  int64_t context_len = 20;   // T: steps per window
  int64_t batch_size = 64;    // B: windows per batch
  double scale = 1000.0;      // returns-to-go are divided by it
  double gamma = 1.0;         // discount of the returns-to-go
  int64_t max_ep_len = 1000;  // timesteps are clipped to max_ep_len - 1
};

// One batch. float32: states [B,T,S], actions [B,T,A], rewards [B,T], returns_to_go [B,T], attention_mask [B,T];
// int64: timesteps [B,T], episode [B] and start [B] (the window of row i is episode[i] from step start[i]).
struct Batch {
  Batch(int64_t batch_size, int64_t context_len, int64_t state_dim, int64_t act_dim);
  std::vector<float> states, actions, rewards, returns_to_go, attention_mask;
  std::vector<int64_t> timesteps, episode, start;
};

// The 64-bit key of the sample stream of (seed, rank); different ranks get unrelated streams.
uint64_t stream_key(uint64_t seed, uint64_t rank);

// Owns the dataset in the form windows are cut from: states normalised once, returns-to-go precomputed once.
class TrajectorySampler {
 public:
  // observations [n_steps, state_dim], actions [n_steps, act_dim], rewards [n_steps] (copied);
  // offsets [n_offsets] = episode boundaries (0, ..., n_steps), non-decreasing; state_mean/std [state_dim].
  TrajectorySampler(const float* observations, const float* actions, const float* rewards, int64_t n_steps,
                    int64_t state_dim, int64_t act_dim, const int64_t* offsets, int64_t n_offsets,
                    const double* state_mean, const double* state_std, const SamplerOptions& options);

  // Rows of batch `batch` of stream `key`: a step uniform over [0, n_steps), mapped to (episode, start).
  void draw(uint64_t key, uint64_t batch, int64_t* episode, int64_t* start) const;
  // Windows of out.episode / out.start (one per row of out) into out; throws on an episode or start out of range.
  void fill(Batch& out) const;
  // draw + fill: batch `batch` of stream `key`, the same whichever thread builds it.
  void build(uint64_t key, uint64_t batch, Batch& out) const;

  const SamplerOptions& options() const { return options_; }
  int64_t n_steps() const { return n_steps_; }
  int64_t n_episodes() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t state_dim() const { return state_dim_; }
  int64_t act_dim() const { return act_dim_; }

 private:
  SamplerOptions options_;
  int64_t n_steps_, state_dim_, act_dim_;
  std::vector<int64_t> offsets_;
  template <typename T>
  using HugeVector = std::vector<T, HugePageAllocator<T>>;
  HugeVector<float> states_;         // [n_steps, state_dim], (obs - mean) / std
  std::vector<float> padded_state_;  // [state_dim], (0 - mean) / std: the blog pads before normalising
  HugeVector<float> actions_;        // [n_steps, act_dim]
  HugeVector<float> rewards_;        // [n_steps]
  HugeVector<float> rtg_;            // [n_steps], discounted returns-to-go / scale
};

// Free batches shared by a Prefetcher and the batches it handed out, which return here when released.
class BatchPool {
 public:
  BatchPool(int64_t batch_size, int64_t context_len, int64_t state_dim, int64_t act_dim, size_t capacity);
  std::unique_ptr<Batch> acquire();
  void release(std::unique_ptr<Batch> batch);

 private:
  int64_t batch_size_, context_len_, state_dim_, act_dim_;
  size_t capacity_;  // free batches kept; more are freed on release
  std::mutex mutex_;
  std::vector<std::unique_ptr<Batch>> free_;
};

// Batches first_batch, first_batch + 1, ... of a stream, built ahead by worker threads into a ring of
// ring_size slots and handed out in order. The destructor stops and joins the workers.
class Prefetcher {
 public:
  Prefetcher(std::shared_ptr<const TrajectorySampler> sampler, uint64_t key, uint64_t first_batch,
             int num_threads, int ring_size);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // The next batch of the stream; while it is not ready the caller builds batches ahead itself, and waits
  // only when every slot of the ring is claimed. Rethrows a worker's exception.
  std::unique_ptr<Batch> next();
  std::shared_ptr<BatchPool> pool() const { return pool_; }
  const TrajectorySampler& sampler() const { return *sampler_; }

 private:
  void work();

  std::shared_ptr<const TrajectorySampler> sampler_;
  std::shared_ptr<BatchPool> pool_;
  uint64_t key_;
  std::vector<std::unique_ptr<Batch>> ring_;  // slot of batch k is k % ring_size
  uint64_t claimed_, delivered_;              // next batch to build, next batch to hand out
  bool stop_ = false;
  std::exception_ptr error_;
  std::mutex mutex_;
  std::condition_variable space_, ready_;
  std::vector<std::thread> workers_;
};

}  // namespace dt
