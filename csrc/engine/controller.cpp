// Controller: see controller.h.
#include "engine/controller.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "common/check.h"

namespace dt {

Controller::Controller(std::unique_ptr<Engine> engine, std::vector<double> state_mean, std::vector<double> state_std,
                       double scale)
    : engine_(std::move(engine)), mean_(std::move(state_mean)), std_(std::move(state_std)), scale_(scale) {
  const int64_t B = engine_->batch(), S = engine_->config().state_dim;
  DT_CHECK(static_cast<int64_t>(mean_.size()) == S, "state_mean must have ", S, " values, got ", mean_.size());
  DT_CHECK(static_cast<int64_t>(std_.size()) == S, "state_std must have ", S, " values, got ", std_.size());
  for (int64_t i = 0; i < S; ++i) {
    DT_CHECK(std::isfinite(mean_[i]), "state_mean[", i, "] is not finite");
    DT_CHECK(std::isfinite(std_[i]) && std_[i] > 0, "state_std must be positive, state_std[", i, "] = ", std_[i]);
  }
  DT_CHECK(std::isfinite(scale) && scale > 0, "scale must be a positive finite number, got ", scale);
  target_.assign(B, 0.0);
  rtg_.assign(B, 0.0f);
  steps_.assign(B, 0);
  states_.assign(B * S, 0.0f);
  timesteps_.assign(B, 0);
}

void Controller::set_target_returns(const double* targets) {
  const int64_t B = engine_->batch();
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t b = 0; b < B; ++b)
    DT_CHECK(std::isfinite(targets[b]), "target_return must be finite, target_return[", b, "] is ", targets[b]);
  std::copy_n(targets, B, target_.begin());
}

void Controller::reset(int64_t row) {
  std::lock_guard<std::mutex> lock(mu_);
  engine_->reset(row);  // checks the range
  steps_[row] = 0;
  rtg_[row] = static_cast<float>(target_[row] / scale_);
}

void Controller::load_weights(Model model) {
  std::lock_guard<std::mutex> lock(mu_);
  engine_->load_weights(std::move(model));  // checks, then restarts every row of the engine
  for (int64_t b = 0; b < engine_->batch(); ++b) {
    steps_[b] = 0;
    rtg_[b] = static_cast<float>(target_[b] / scale_);
  }
}

void Controller::act(const float* obs, const double* reward, float* actions) {
  const int64_t B = engine_->batch(), S = engine_->config().state_dim, max_t = engine_->config().max_ep_len - 1;
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t i = 0; i < B * S; ++i)
    if (!std::isfinite(obs[i])) fail("obs contains NaN or inf: first at obs[", i / S, ", ", i % S, "] = ", obs[i]);
  if (reward == nullptr) {
    std::ostringstream rows;
    int shown = 0;
    for (int64_t b = 0; b < B && shown < 5; ++b)
      if (steps_[b] > 0) rows << (shown++ ? ", " : "") << b;
    DT_CHECK(shown == 0, "reward is None but rows [", rows.str(),
             "] are past their first step: pass the reward received for the previous action");
  } else {
    for (int64_t b = 0; b < B; ++b)
      DT_CHECK(steps_[b] == 0 || std::isfinite(reward[b]), "reward contains NaN or inf: first at reward[", b,
               "] = ", reward[b]);
  }
  for (int64_t b = 0; b < B; ++b) {
    if (steps_[b] > 0) rtg_[b] -= static_cast<float>(reward[b] / scale_);
    for (int64_t i = 0; i < S; ++i)
      states_[b * S + i] = static_cast<float>((static_cast<double>(obs[b * S + i]) - mean_[i]) / std_[i]);
    timesteps_[b] = std::min(steps_[b], max_t);
  }
  engine_->step(states_.data(), rtg_.data(), timesteps_.data(), actions);
  for (int64_t b = 0; b < B; ++b) ++steps_[b];
}

}  // namespace dt
