// Controller: the bookkeeping of the blog's get_action loop around an Engine, for callers that hold raw
// observations and rewards (dt_fast.Policy's cpp backend, csrc/examples/control_loop.cpp). Per row it keeps the
// return-to-go (target / scale at reset, minus reward / scale after every step), the steps since reset (the
// timestep, clipped to max_ep_len - 1) and normalises observations with the dataset's mean and std, with the
// same float rounding as dt_fast/policy.py: (double(obs) - mean) / std in double, then float.
// Thread safety: as the Engine's (engine.h), a lock per controller held by act, reset, set_target_returns and
// load_weights, so calls from several threads run one after the other; act and load_weights then take the engine's lock
// inside its own (always in that order). Two threads stepping one episode is still a usage error even though it no
// longer crashes: the order of their calls, and so which reward and observation each action answers, is up to the
// scheduler.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/engine.h"

namespace dt {

class Controller {
 public:
  // state_mean, state_std: (S) with std > 0; scale > 0. Every row starts at step 0 with target return 0.
  Controller(std::unique_ptr<Engine> engine, std::vector<double> state_mean, std::vector<double> state_std,
             double scale);

  // The return (environment units) each row conditions on from its next reset: targets (B).
  void set_target_returns(const double* targets);
  // Start a new episode in `row`.
  void reset(int64_t row);
  // One environment step: obs (B, S) raw observations; reward (B) received for each row's previous action, or
  // null when every row is on its first step (a first step's reward is ignored); actions (B, A) written.
  // Checks everything before changing any state; throws std::invalid_argument naming the first bad value.
  void act(const float* obs, const double* reward, float* actions);

  // Engine::load_weights, then a new episode in every row (as reset(row) of each).
  void load_weights(Model model);

  Engine& engine() { return *engine_; }

 private:
  std::mutex mu_;  // held by every call that reads or writes the state below
  std::unique_ptr<Engine> engine_;
  std::vector<double> mean_, std_;  // (S)
  double scale_;
  std::vector<double> target_;      // (B) environment units
  std::vector<float> rtg_;          // (B) return-to-go / scale
  std::vector<int64_t> steps_;      // (B) steps since reset
  std::vector<float> states_;       // (B, S) normalised observations of the current step
  std::vector<int64_t> timesteps_;  // (B)
};

}  // namespace dt
