// control_loop: the engine alone (no Python) driving a toy system, as a real-time controller would.
//
//   control_loop CHECKPOINT_DIR [STEPS=200] [MODE=exact] [CONTEXT_LEN]
//
// Loads config.json + model.safetensors (+ dt_fast.json for state mean/std, scale, target return and context
// length when present), then runs STEPS steps of a toy linear system x' = 0.95 x + 0.1 u (u = the action padded
// or cut to state_dim) with reward -|x|^2 / state_dim, through dt::Controller, which does the blog's bookkeeping
// (states normalised, return-to-go decremented by reward / scale, timesteps clipped to max_ep_len - 1). Prints
// the per-step latency and a checksum of the actions; exit code 1 with a message on any error.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.h"
#include "engine/controller.h"
#include "engine/engine.h"
#include "engine/json.h"

namespace {

// state_mean, state_std, scale, target_return, context_len from dt_fast.json when the file exists.
struct Metadata {
  std::vector<double> mean, std;
  double scale = 1000.0, target_return = 3600.0;
  int context_len = 20;
};

Metadata read_metadata(const std::string& dir, int state_dim) {
  Metadata m;
  m.mean.assign(state_dim, 0.0f);
  m.std.assign(state_dim, 1.0f);
  const std::string path = dir + "/dt_fast.json";
  std::ifstream in(path);
  if (!in.good()) return m;
  std::stringstream ss;
  ss << in.rdbuf();
  dt::Json j = dt::Json::parse(ss.str(), path);
  for (auto [key, out] : {std::pair{"state_mean", &m.mean}, std::pair{"state_std", &m.std}}) {
    const dt::Json& a = j.at(key, path);
    DT_CHECK(a.kind == dt::Json::Kind::Array && static_cast<int>(a.array.size()) == state_dim, path, ": '", key,
             "' must be a list of ", state_dim, " numbers");
    for (int i = 0; i < state_dim; ++i) (*out)[i] = a.array[i].number;
  }
  m.scale = dt::json_number_or(j, "scale", m.scale, path);
  m.target_return = dt::json_number_or(j, "target_return", m.target_return, path);
  m.context_len = static_cast<int>(dt::json_int_or(j, "context_len", m.context_len, path));
  return m;
}

int run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR [STEPS=200] [MODE=exact] [CONTEXT_LEN]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int steps = argc > 2 ? std::stoi(argv[2]) : 200;
  const dt::Mode mode = dt::parse_mode(argc > 3 ? argv[3] : "exact");
  dt::Model model = dt::load_checkpoint(dir);
  const int S = model.config.state_dim, A = model.config.act_dim;
  Metadata meta = read_metadata(dir, S);
  const int K = argc > 4 ? std::stoi(argv[4]) : meta.context_len;
  auto engine = std::make_unique<dt::Engine>(std::move(model), 1, K, mode);
  const char* isa = engine->isa();
  dt::Controller policy(std::move(engine), meta.mean, meta.std, meta.scale);
  policy.set_target_returns(&meta.target_return);

  std::vector<float> x(S, 0.5f), action(A);
  double reward = 0.0, checksum = 0.0, total_us = 0.0, worst_us = 0.0;
  policy.reset(0);
  for (int t = 0; t < steps; ++t) {
    auto start = std::chrono::steady_clock::now();
    policy.act(x.data(), t > 0 ? &reward : nullptr, action.data());
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    total_us += us;
    worst_us = std::max(worst_us, us);
    reward = 0.0;
    for (int i = 0; i < S; ++i) {
      x[i] = 0.95f * x[i] + 0.1f * action[i % A];
      reward -= static_cast<double>(x[i]) * x[i] / S;
    }
    for (int i = 0; i < A; ++i) checksum += action[i];
  }
  std::printf("control_loop: %d steps, mode %s, K=%d, isa %s, mean step %.1f us, worst %.1f us, checksum %.6f\n", steps,
              mode == dt::Mode::Exact ? "exact" : "rolling", K, isa, total_us / steps, worst_us, checksum);
  return std::isfinite(checksum) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "control_loop: error: %s\n", e.what());
    return 1;
  }
}
