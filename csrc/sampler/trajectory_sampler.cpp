#include "sampler/trajectory_sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

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
    : options_(options), state_dim_(state_dim), act_dim_(act_dim) {
  DT_CHECK(options.context_len >= 1, "context_len must be >= 1, got ", options.context_len);
  DT_CHECK(options.batch_size >= 1, "batch_size must be >= 1, got ", options.batch_size);
  DT_CHECK(options.max_ep_len >= 1, "max_ep_len must be >= 1, got ", options.max_ep_len);
  DT_CHECK(std::isfinite(options.gamma) && options.gamma >= 0.0 && options.gamma <= 1.0,
           "gamma must be in [0, 1], got ", options.gamma);
  DT_CHECK(options.capacity >= 0, "capacity must be >= 1 (or 0: no replay buffer), got ", options.capacity);
  DT_CHECK(n_steps >= 1, "the dataset has no steps");
  DT_CHECK(state_dim >= 1 && act_dim >= 1, "state_dim and act_dim must be >= 1, got ", state_dim, " and ", act_dim);
  for (int64_t d = 0; d < state_dim; ++d) {
    DT_CHECK(std::isfinite(state_mean[d]), "state_mean[", d, "] is not finite: ", state_mean[d]);
    DT_CHECK(std::isfinite(state_std[d]) && state_std[d] > 0.0, "state_std[", d, "] must be finite and > 0, got ",
             state_std[d]);
  }
  check_offsets(offsets, n_offsets, n_steps);
  mean_.assign(state_mean, state_mean + state_dim);
  std_.assign(state_std, state_std + state_dim);
  padded_state_.resize(state_dim);
  for (int64_t d = 0; d < state_dim; ++d) padded_state_[d] = static_cast<float>((0.0 - mean_[d]) / std_[d]);
  std::vector<Range> ranges;
  for (int64_t e = 0; e + 1 < n_offsets; ++e) ranges.push_back({offsets[e], offsets[e + 1] - offsets[e]});
  const size_t capacity = static_cast<size_t>(options.capacity);
  if (capacity > 0) {
    for (size_t e = 0; e < ranges.size(); ++e)
      DT_CHECK(ranges[e].length >= 1, "a replay buffer holds whole episodes: episode ", e, " has no steps");
    if (ranges.size() > capacity) {  // ODT: the `capacity` highest returns, lowest first
      std::vector<double> returns(ranges.size(), 0.0);
      for (size_t e = 0; e < ranges.size(); ++e)
        for (int64_t t = ranges[e].first; t < ranges[e].first + ranges[e].length; ++t) returns[e] += rewards[t];
      std::vector<size_t> order(ranges.size());
      std::iota(order.begin(), order.end(), size_t{0});
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return returns[a] < returns[b]; });
      std::vector<Range> kept;
      for (size_t i = order.size() - capacity; i < order.size(); ++i) kept.push_back(ranges[order[i]]);
      ranges = std::move(kept);
    }
  }
  add_segment(observations, actions, rewards, ranges, false);
  evict_and_index();
}

void TrajectorySampler::add_segment(const float* observations, const float* actions, const float* rewards,
                                    const std::vector<Range>& ranges, bool normalised) {
  const int64_t S = state_dim_, A = act_dim_;
  std::vector<int64_t> offsets{0};  // of the episodes inside the segment
  for (const Range& r : ranges) offsets.push_back(offsets.back() + r.length);
  const int64_t n = offsets.back();
  auto seg = std::make_shared<Segment>();
  seg->states.resize(n * S);
  seg->actions.resize(n * A);
  seg->rewards.resize(n);
  seg->rtg.resize(n);
  for (size_t e = 0; e < ranges.size(); ++e) {
    const int64_t len = ranges[e].length, src = ranges[e].first, dst = offsets[e];
    if (normalised) {
      std::memcpy(seg->states.data() + dst * S, observations + src * S, len * S * sizeof(float));
    } else {
      for (int64_t i = 0; i < len; ++i) {
        const float* in = observations + (src + i) * S;
        float* out = seg->states.data() + (dst + i) * S;
        for (int64_t d = 0; d < S; ++d) out[d] = static_cast<float>((static_cast<double>(in[d]) - mean_[d]) / std_[d]);
      }
    }
    std::memcpy(seg->actions.data() + dst * A, actions + src * A, len * A * sizeof(float));
    std::memcpy(seg->rewards.data() + dst, rewards + src, len * sizeof(float));
  }
  // Per episode, so an episode's returns-to-go are the same bits wherever it sits and whenever it came.
  returns_to_go(seg->rewards.data(), n, offsets.data(), static_cast<int64_t>(offsets.size()), options_.gamma,
                options_.scale, seg->rtg.data());
  for (size_t e = 0; e < ranges.size(); ++e) episodes_.push_back({seg.get(), offsets[e], ranges[e].length});
  segments_.push_back(std::move(seg));
}

void TrajectorySampler::evict_and_index() {
  const size_t capacity = static_cast<size_t>(options_.capacity);
  if (capacity > 0 && episodes_.size() > capacity)
    episodes_.erase(episodes_.begin(), episodes_.end() - static_cast<std::ptrdiff_t>(capacity));
  // Segments are in age order, as episodes are: those before the oldest held episode's segment hold none.
  size_t first = 0;
  while (segments_[first].get() != episodes_.front().segment) ++first;
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<std::ptrdiff_t>(first));
  starts_.assign(1, 0);
  for (const EpisodeRef& ep : episodes_) starts_.push_back(starts_.back() + ep.length);
}

std::shared_ptr<TrajectorySampler> TrajectorySampler::with_episodes(const Episodes& in, bool normalised,
                                                                    bool replace) const {
  const int64_t S = state_dim_, A = act_dim_;
  DT_CHECK(options_.capacity >= 1, "adding episodes needs a replay buffer (a sampler built with a capacity)");
  DT_CHECK(in.n_episodes >= 0 && in.n_steps >= 0, "negative episode or step count");
  int64_t total = 0;
  for (int64_t e = 0; e < in.n_episodes; ++e) {
    DT_CHECK(in.lengths[e] >= 1 && in.lengths[e] <= in.n_steps, "lengths[", e, "] = ", in.lengths[e],
             " must be in [1, ", in.n_steps, "] (whole episodes, as many steps as observations has rows at most)");
    total += in.lengths[e];
    DT_CHECK(total <= in.n_steps, "lengths sum to more than the ", in.n_steps, " rows of observations");
  }
  DT_CHECK(total == in.n_steps, "lengths sum to ", total, " but observations has ", in.n_steps, " rows");
  auto check_finite = [](const float* x, int64_t rows, int64_t cols, const char* name) {
    for (int64_t i = 0; i < rows * cols; ++i)
      if (!std::isfinite(x[i])) {
        if (cols == 1) fail(name, "[", i, "] is not finite: ", x[i]);
        fail(name, "[", i / cols, ", ", i % cols, "] is not finite: ", x[i]);
      }
  };
  check_finite(in.observations, in.n_steps, S, normalised ? "states" : "observations");
  check_finite(in.actions, in.n_steps, A, "actions");
  check_finite(in.rewards, in.n_steps, 1, "rewards");
  if (replace)
    DT_CHECK(in.n_episodes >= 1 && in.n_episodes <= options_.capacity,
             "a restored buffer holds 1 to capacity = ", options_.capacity, " episodes, got ", in.n_episodes);
  auto out = std::make_shared<TrajectorySampler>(*this);
  if (replace) {
    out->episodes_.clear();
    out->segments_.clear();
  }
  // Only the last `capacity` new episodes could stay: the others are not copied.
  std::vector<Range> ranges;
  for (int64_t e = 0, first = 0; e < in.n_episodes; first += in.lengths[e++])
    if (in.n_episodes - e <= options_.capacity) ranges.push_back({first, in.lengths[e]});
  if (!ranges.empty()) out->add_segment(in.observations, in.actions, in.rewards, ranges, normalised);
  out->evict_and_index();
  return out;
}

std::shared_ptr<TrajectorySampler> TrajectorySampler::appended(const Episodes& episodes) const {
  return with_episodes(episodes, false, false);
}

std::shared_ptr<TrajectorySampler> TrajectorySampler::restored(const Episodes& episodes) const {
  return with_episodes(episodes, true, true);
}

void TrajectorySampler::copy_episodes(float* states, float* actions, float* rewards, int64_t* lengths) const {
  const int64_t S = state_dim_, A = act_dim_;
  int64_t at = 0;
  for (const EpisodeRef& ep : episodes_) {
    const Segment& g = *ep.segment;
    std::memcpy(states + at * S, g.states.data() + ep.first * S, ep.length * S * sizeof(float));
    std::memcpy(actions + at * A, g.actions.data() + ep.first * A, ep.length * A * sizeof(float));
    std::memcpy(rewards + at, g.rewards.data() + ep.first, ep.length * sizeof(float));
    *lengths++ = ep.length;
    at += ep.length;
  }
}

void TrajectorySampler::draw(uint64_t key, uint64_t batch, int64_t* episode, int64_t* start) const {
  const uint64_t B = static_cast<uint64_t>(options_.batch_size);
  for (uint64_t i = 0; i < B; ++i) {
    const int64_t step = below(mix(key + mix(batch * B + i)), n_steps());
    // The episode holding `step`: the last e with starts[e] <= step (empty episodes are never chosen).
    const int64_t e = std::upper_bound(starts_.begin(), starts_.end(), step) - starts_.begin() - 1;
    episode[i] = e;
    start[i] = step - starts_[e];
  }
}

void TrajectorySampler::fill(Batch& out) const {
  const int64_t T = options_.context_len, S = state_dim_, A = act_dim_;
  const int64_t last_t = options_.max_ep_len - 1;
  const int64_t rows = static_cast<int64_t>(out.episode.size());
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t e = out.episode[i], s = out.start[i];
    DT_CHECK(e >= 0 && e < n_episodes(), "episode[", i, "] = ", e, " is out of range [0, ", n_episodes(), ")");
    const int64_t len = episodes_[e].length;
    DT_CHECK(s >= 0 && s < len, "start[", i, "] = ", s, " is out of range [0, ", len, ") of episode ", e);
  }
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t e = out.episode[i], s = out.start[i];
    const EpisodeRef& ep = episodes_[e];
    const Segment& g = *ep.segment;
    const int64_t tlen = std::min(T, ep.length - s);  // the window is cut at the episode's end
    const int64_t pad = T - tlen;                     // and left-padded to T
    const int64_t first = ep.first + s;

    float* states = out.states.data() + i * T * S;
    for (int64_t t = 0; t < pad; ++t) std::memcpy(states + t * S, padded_state_.data(), S * sizeof(float));
    std::memcpy(states + pad * S, g.states.data() + first * S, tlen * S * sizeof(float));

    float* actions = out.actions.data() + i * T * A;
    std::fill(actions, actions + pad * A, kPadAction);
    std::memcpy(actions + pad * A, g.actions.data() + first * A, tlen * A * sizeof(float));

    float* rewards = out.rewards.data() + i * T;
    std::fill(rewards, rewards + pad, 0.0f);
    std::memcpy(rewards + pad, g.rewards.data() + first, tlen * sizeof(float));

    float* rtg = out.returns_to_go.data() + i * T;
    std::fill(rtg, rtg + pad, 0.0f);
    std::memcpy(rtg + pad, g.rtg.data() + first, tlen * sizeof(float));

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
    : batch_size_(batch_size),
      context_len_(context_len),
      state_dim_(state_dim),
      act_dim_(act_dim),
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
