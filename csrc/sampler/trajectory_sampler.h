// Training windows of the blog's collator, built from flat episode arrays by a counter-based RNG; with a capacity,
// the online replay buffer of whole episodes (Online Decision Transformer, Zheng et al. 2022).
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
  int64_t capacity = 0;       // 0: a fixed dataset; >= 1: a replay buffer of at most `capacity` episodes
};

// One batch. float32: states [B,T,S], actions [B,T,A], rewards [B,T], returns_to_go [B,T], attention_mask [B,T];
// int64: timesteps [B,T], episode [B] and start [B] (the window of row i is episode[i] from step start[i]).
struct Batch {
  Batch(int64_t batch_size, int64_t context_len, int64_t state_dim, int64_t act_dim);
  std::vector<float> states, actions, rewards, returns_to_go, attention_mask;
  std::vector<int64_t> timesteps, episode, start;
};

// Whole episodes as flat arrays: observations [n_steps, state_dim], actions [n_steps, act_dim], rewards [n_steps],
// lengths [n_episodes] (each >= 1, summing to n_steps).
struct Episodes {
  const float* observations;
  const float* actions;
  const float* rewards;
  const int64_t* lengths;
  int64_t n_steps, n_episodes;
};

// The 64-bit key of the sample stream of (seed, rank); different ranks get unrelated streams.
uint64_t stream_key(uint64_t seed, uint64_t rank);

template <typename T>
using HugeVector = std::vector<T, HugePageAllocator<T>>;

// The steps of consecutive episodes in window form. Never written once built: samplers share segments.
struct Segment {
  HugeVector<float> states;   // [n, state_dim], (obs - mean) / std
  HugeVector<float> actions;  // [n, act_dim]
  HugeVector<float> rewards;  // [n]
  HugeVector<float> rtg;      // [n], discounted returns-to-go of each step to its episode's end / scale
};

// Owns the episodes in the form windows are cut from: states normalised once, returns-to-go precomputed once.
//
// Storage: steps live in segments (the offline data is one; each append brings one), which samplers share and
// nobody writes, so appending episodes builds a new sampler that holds the old one's segments plus one new
// segment without copying a step it already held, and a prefetcher still sampling the old sampler reads memory no
// thread writes. The held episodes form a table, oldest first, of (segment, first step, length), with the
// cumulative lengths that map a uniform step to its episode; an append rebuilds both: O(episodes held), not O(steps).
//
// Replay buffer (options.capacity >= 1), as ODT's ReplayBuffer (facebookresearch/online-dt, replay_buffer.py): of
// the offline episodes it keeps all, in dataset order, when there are at most `capacity`, else the `capacity` with
// the highest returns, lowest first (ODT's argsort; ties in dataset order here). Appended episodes come after them,
// and the oldest beyond the capacity are evicted: first in, first out. ODT instead overwrites the slots of its list
// from a rotating start index: it keeps the same set of episodes (the `capacity` most recently inserted, counting
// the offline ones in the order above) in a different order, which changes the episode index a draw maps to, not
// the distribution of windows (and its slot assignment grows the list past its capacity when a batch of new
// episodes crosses the list's end, which FIFO has no case of). A segment is freed once none of its episodes is
// held; only the oldest segment can be partly evicted, so the memory held is at most one segment over the episodes'.
class TrajectorySampler {
 public:
  // observations [n_steps, state_dim], actions [n_steps, act_dim], rewards [n_steps] (copied);
  // offsets [n_offsets] = episode boundaries (0, ..., n_steps), non-decreasing; state_mean/std [state_dim].
  // With options.capacity >= 1 every episode must be non-empty.
  TrajectorySampler(const float* observations, const float* actions, const float* rewards, int64_t n_steps,
                    int64_t state_dim, int64_t act_dim, const int64_t* offsets, int64_t n_offsets,
                    const double* state_mean, const double* state_std, const SamplerOptions& options);
  // Cheap: the copy shares the segments.
  TrajectorySampler(const TrajectorySampler&) = default;

  // Replay buffer only: this sampler's episodes plus `episodes` (raw observations, normalised with this sampler's
  // mean and std; returns-to-go from their own rewards, the hindsight relabelling), the oldest beyond the capacity
  // evicted. New episodes that would be evicted at once are not copied. Throws, building nothing, on a length < 1,
  // lengths not summing to n_steps, or a value that is not finite.
  std::shared_ptr<TrajectorySampler> appended(const Episodes& episodes) const;
  // Replay buffer only: a sampler with this one's options, mean and std holding exactly `episodes` (1 to capacity
  // of them), whose observations are normalised states as copy_episodes gives them: resumes a saved buffer.
  std::shared_ptr<TrajectorySampler> restored(const Episodes& episodes) const;
  // The held episodes, oldest first: states [n_steps, state_dim] (normalised), actions [n_steps, act_dim],
  // rewards [n_steps], lengths [n_episodes].
  void copy_episodes(float* states, float* actions, float* rewards, int64_t* lengths) const;

  // Rows of batch `batch` of stream `key`: a step uniform over [0, n_steps), mapped to (episode, start).
  void draw(uint64_t key, uint64_t batch, int64_t* episode, int64_t* start) const;
  // Windows of out.episode / out.start (one per row of out) into out; throws on an episode or start out of range.
  void fill(Batch& out) const;
  // draw + fill: batch `batch` of stream `key`, the same whichever thread builds it.
  void build(uint64_t key, uint64_t batch, Batch& out) const;

  const SamplerOptions& options() const { return options_; }
  int64_t n_steps() const { return starts_.back(); }
  int64_t n_episodes() const { return static_cast<int64_t>(episodes_.size()); }
  int64_t state_dim() const { return state_dim_; }
  int64_t act_dim() const { return act_dim_; }

 private:
  // A held episode: `length` steps of `segment` from step `first`.
  struct EpisodeRef {
    const Segment* segment;
    int64_t first, length;
  };
  // Episode e of a source: `length` steps of flat arrays from step `first`.
  struct Range {
    int64_t first, length;
  };

  // A segment of the source episodes `ranges` (observations normalised unless `normalised`), appended to the held
  // episodes; returns-to-go computed per episode, as the constructor does for the offline data.
  void add_segment(const float* observations, const float* actions, const float* rewards,
                   const std::vector<Range>& ranges, bool normalised);
  // appended / restored: `episodes` after the held ones (or instead of them), then FIFO eviction.
  std::shared_ptr<TrajectorySampler> with_episodes(const Episodes& episodes, bool normalised, bool replace) const;
  // Evict the oldest episodes beyond the capacity, drop segments no held episode uses, rebuild starts_.
  void evict_and_index();

  SamplerOptions options_;
  int64_t state_dim_, act_dim_;
  std::vector<double> mean_, std_;   // [state_dim]
  std::vector<float> padded_state_;  // [state_dim], (0 - mean) / std: the blog pads before normalising
  std::vector<std::shared_ptr<const Segment>> segments_;  // oldest first
  std::vector<EpisodeRef> episodes_;                      // held episodes, oldest first
  std::vector<int64_t> starts_;  // [n_episodes + 1]: episode e takes the draws [starts_[e], starts_[e + 1])
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
  Prefetcher(std::shared_ptr<const TrajectorySampler> sampler, uint64_t key, uint64_t first_batch, int num_threads,
             int ring_size);
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
