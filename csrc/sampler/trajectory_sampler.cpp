#include "sampler/trajectory_sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/check.h"
#include "sampler/returns.h"

namespace dt {

namespace {

// splitmix64 (Steele et al. 2014): a bijective 64-bit mixer; mix(counter) is a counter-based generator.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Actions of the padding before a window: the blog's collator pads them with -10, outside any action's [-1, 1].
constexpr float kPadAction = -10.0f;

// floor(r * n / 2^64): uniform over [0, n) for a uniform 64-bit r (bias below n / 2^64).
int64_t below(uint64_t r, int64_t n) {
  return static_cast<int64_t>((static_cast<unsigned __int128>(r) * static_cast<uint64_t>(n)) >> 64);
}

}  // namespace

Batch::Batch(int64_t batch_size, int64_t context_len, int64_t state_dim, int64_t act_dim)
    : states(batch_size * context_len * state_dim),
      actions(batch_size * context_len * act_dim),
      rewards(batch_size * context_len),
      returns_to_go(batch_size * context_len),
      attention_mask(batch_size * context_len),
      timesteps(batch_size * context_len),
      episode(batch_size),
      start(batch_size) {}

uint64_t stream_key(uint64_t seed, uint64_t rank) { return mix(mix(seed) ^ mix(~rank)); }

TrajectorySampler::TrajectorySampler(const float* observations, const float* actions, const float* rewards,
                                     int64_t n_steps, int64_t state_dim, int64_t act_dim, const int64_t* offsets,
                                     int64_t n_offsets, const double* state_mean, const double* state_std,
                                     const SamplerOptions& options)
    : options_(options), n_steps_(n_steps), state_dim_(state_dim), act_dim_(act_dim) {
  DT_CHECK(options.context_len >= 1, "context_len must be >= 1, got ", options.context_len);
  DT_CHECK(options.batch_size >= 1, "batch_size must be >= 1, got ", options.batch_size);
  DT_CHECK(options.max_ep_len >= 1, "max_ep_len must be >= 1, got ", options.max_ep_len);
  DT_CHECK(std::isfinite(options.gamma) && options.gamma >= 0.0 && options.gamma <= 1.0,
           "gamma must be in [0, 1], got ", options.gamma);
  DT_CHECK(n_steps >= 1, "the dataset has no steps");
  DT_CHECK(state_dim >= 1 && act_dim >= 1, "state_dim and act_dim must be >= 1, got ", state_dim, " and ",
           act_dim);
  for (int64_t d = 0; d < state_dim; ++d) {
    DT_CHECK(std::isfinite(state_mean[d]), "state_mean[", d, "] is not finite: ", state_mean[d]);
    DT_CHECK(std::isfinite(state_std[d]) && state_std[d] > 0.0, "state_std[", d, "] must be finite and > 0, got ",
             state_std[d]);
  }
  offsets_.assign(offsets, offsets + n_offsets);
  rtg_.resize(n_steps);
  returns_to_go(rewards, n_steps, offsets, n_offsets, options.gamma, options.scale, rtg_.data());  // checks offsets
  states_.resize(n_steps * state_dim);
  for (int64_t i = 0; i < n_steps; ++i) {
    const float* src = observations + i * state_dim;
    float* dst = states_.data() + i * state_dim;
    for (int64_t d = 0; d < state_dim; ++d) {
      dst[d] = static_cast<float>((static_cast<double>(src[d]) - state_mean[d]) / state_std[d]);
    }
  }
  padded_state_.resize(state_dim);
  for (int64_t d = 0; d < state_dim; ++d) {
    padded_state_[d] = static_cast<float>((0.0 - state_mean[d]) / state_std[d]);
  }
  actions_.assign(actions, actions + n_steps * act_dim);
  rewards_.assign(rewards, rewards + n_steps);
}

void TrajectorySampler::draw(uint64_t key, uint64_t batch, int64_t* episode, int64_t* start) const {
  const uint64_t B = static_cast<uint64_t>(options_.batch_size);
  for (uint64_t i = 0; i < B; ++i) {
    const int64_t step = below(mix(key + mix(batch * B + i)), n_steps_);
    // The episode holding `step`: the last e with offsets[e] <= step (empty episodes are never chosen).
    const int64_t e = std::upper_bound(offsets_.begin(), offsets_.end(), step) - offsets_.begin() - 1;
    episode[i] = e;
    start[i] = step - offsets_[e];
  }
}

void TrajectorySampler::fill(Batch& out) const {
  const int64_t T = options_.context_len, S = state_dim_, A = act_dim_;
  const int64_t last_t = options_.max_ep_len - 1;
  const int64_t rows = static_cast<int64_t>(out.episode.size());
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t e = out.episode[i], s = out.start[i];
    DT_CHECK(e >= 0 && e < n_episodes(), "episode[", i, "] = ", e, " is out of range [0, ", n_episodes(), ")");
    const int64_t len = offsets_[e + 1] - offsets_[e];
    DT_CHECK(s >= 0 && s < len, "start[", i, "] = ", s, " is out of range [0, ", len, ") of episode ", e);
  }
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t e = out.episode[i], s = out.start[i];
    const int64_t len = offsets_[e + 1] - offsets_[e];
    const int64_t tlen = std::min(T, len - s);  // the window is cut at the episode's end
    const int64_t pad = T - tlen;               // and left-padded to T
    const int64_t first = offsets_[e] + s;

    float* states = out.states.data() + i * T * S;
    for (int64_t t = 0; t < pad; ++t) std::memcpy(states + t * S, padded_state_.data(), S * sizeof(float));
    std::memcpy(states + pad * S, states_.data() + first * S, tlen * S * sizeof(float));

    float* actions = out.actions.data() + i * T * A;
    std::fill(actions, actions + pad * A, kPadAction);
    std::memcpy(actions + pad * A, actions_.data() + first * A, tlen * A * sizeof(float));

    float* rewards = out.rewards.data() + i * T;
    std::fill(rewards, rewards + pad, 0.0f);
    std::memcpy(rewards + pad, rewards_.data() + first, tlen * sizeof(float));

    float* rtg = out.returns_to_go.data() + i * T;
    std::fill(rtg, rtg + pad, 0.0f);
    std::memcpy(rtg + pad, rtg_.data() + first, tlen * sizeof(float));

    int64_t* timesteps = out.timesteps.data() + i * T;
    float* mask = out.attention_mask.data() + i * T;
    for (int64_t t = 0; t < pad; ++t) {
      timesteps[t] = 0;
      mask[t] = 0.0f;
    }
    for (int64_t t = 0; t < tlen; ++t) {
      timesteps[pad + t] = std::min(s + t, last_t);
      mask[pad + t] = 1.0f;
    }
  }
}

void TrajectorySampler::build(uint64_t key, uint64_t batch, Batch& out) const {
  draw(key, batch, out.episode.data(), out.start.data());
  fill(out);
}

BatchPool::BatchPool(int64_t batch_size, int64_t context_len, int64_t state_dim, int64_t act_dim, size_t capacity)
    : batch_size_(batch_size), context_len_(context_len), state_dim_(state_dim), act_dim_(act_dim),
      capacity_(capacity) {
  for (size_t i = 0; i < capacity; ++i) {
    free_.push_back(std::make_unique<Batch>(batch_size, context_len, state_dim, act_dim));
  }
}

std::unique_ptr<Batch> BatchPool::acquire() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!free_.empty()) {
      std::unique_ptr<Batch> batch = std::move(free_.back());
      free_.pop_back();
      return batch;
    }
  }
  return std::make_unique<Batch>(batch_size_, context_len_, state_dim_, act_dim_);
}

void BatchPool::release(std::unique_ptr<Batch> batch) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_.size() < capacity_) free_.push_back(std::move(batch));
}

Prefetcher::Prefetcher(std::shared_ptr<const TrajectorySampler> sampler, uint64_t key, uint64_t first_batch,
                       int num_threads, int ring_size)
    : sampler_(std::move(sampler)), key_(key), claimed_(first_batch), delivered_(first_batch) {
  DT_CHECK(num_threads >= 1, "num_threads must be >= 1, got ", num_threads);
  DT_CHECK(ring_size >= 1, "ring_size must be >= 1, got ", ring_size);
  const SamplerOptions& o = sampler_->options();
  pool_ = std::make_shared<BatchPool>(o.batch_size, o.context_len, sampler_->state_dim(), sampler_->act_dim(),
                                      static_cast<size_t>(ring_size + num_threads));
  ring_.resize(ring_size);
  for (int i = 0; i < num_threads; ++i) workers_.emplace_back(&Prefetcher::work, this);
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  space_.notify_all();
  for (std::thread& w : workers_) w.join();
}

void Prefetcher::work() {
  const uint64_t ring = ring_.size();
  for (;;) {
    uint64_t k;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      space_.wait(lock, [&] { return stop_ || claimed_ < delivered_ + ring; });
      if (stop_) return;
      k = claimed_++;
    }
    std::unique_ptr<Batch> batch = pool_->acquire();
    try {
      sampler_->build(key_, k, *batch);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      stop_ = true;
      ready_.notify_all();
      space_.notify_all();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ring_[k % ring] = std::move(batch);
    }
    ready_.notify_all();
  }
}

std::unique_ptr<Batch> Prefetcher::next() {
  std::unique_ptr<Batch> batch;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t ring = ring_.size();
    // Until the next batch is ready, the caller builds batches ahead itself rather than sleeping.
    while (error_ == nullptr && ring_[delivered_ % ring] == nullptr) {
      if (claimed_ >= delivered_ + ring) {
        ready_.wait(lock);
        continue;
      }
      const uint64_t k = claimed_++;
      lock.unlock();
      std::unique_ptr<Batch> built = pool_->acquire();
      try {
        sampler_->build(key_, k, *built);
      } catch (...) {
        lock.lock();
        error_ = std::current_exception();
        stop_ = true;
        break;
      }
      lock.lock();
      ring_[k % ring] = std::move(built);
    }
    if (error_) {
      space_.notify_all();
      std::rethrow_exception(error_);
    }
    batch = std::move(ring_[delivered_ % ring]);
    ++delivered_;
    // Wake the workers only once the ring has drained to half: they then refill it in one go, instead of
    // one wake-up (and context switch) per batch.
    if (claimed_ - delivered_ > ring / 2) return batch;
  }
  space_.notify_all();
  return batch;
}

}  // namespace dt
