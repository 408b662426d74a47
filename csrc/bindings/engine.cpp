// Python face of the inference engine: dt_fast._C.Engine (normalised inputs) and dt_fast._C.Controller (the
// engine with the control loop's bookkeeping, raw observations and rewards). Thin: checks every array at the
// boundary, releases the GIL around the step. dt_fast/policy.py wraps the Controller with the step API.
// Both objects serialise their own calls with a lock (engine.h, "Thread safety"); every call that may wait for
// it releases the GIL first, so a thread waiting for an engine never holds up the other Python threads.
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bindings/bindings.h"
#include "engine/controller.h"
#include "engine/engine.h"
#include "engine/kernels.h"

namespace dt_py {

namespace {

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::unique_ptr<dt::Engine> engine_from_tensors(const std::string& config_json, const py::dict& tensors, int batch,
                                                int context_len, const std::string& mode, int n_threads,
                                                const std::string& isa) {
  dt::Config config = dt::Config::from_json(dt::Json::parse(config_json, "config"), "config");
  std::map<std::string, dt::TensorView> views;
  std::vector<CArray<float>> keep;  // owns converted arrays until the weights are copied
  for (auto item : tensors) {
    std::string name = py::str(item.first);
    keep.push_back(CArray<float>::ensure(item.second));
    if (!keep.back()) throw py::value_error("weight '" + name + "' is not convertible to a float32 array");
    dt::TensorView v;
    for (py::ssize_t i = 0; i < keep.back().ndim(); ++i) v.shape.push_back(keep.back().shape(i));
    v.data = keep.back().data();
    views.emplace(name, std::move(v));
  }
  dt::Weights w = dt::Weights::from_tensors(config, views, "weights");
  return std::make_unique<dt::Engine>(dt::Model{config, std::move(w)}, batch, context_len, dt::parse_mode(mode),
                                      n_threads, isa);
}

py::array_t<float> engine_step(dt::Engine& e, const py::array& states_in, const py::array& rtg_in,
                               const py::array& timesteps_in) {
  const int B = e.batch(), S = e.config().state_dim, A = e.config().act_dim;
  if (states_in.ndim() != 2 || states_in.shape(0) != B || states_in.shape(1) != S)
    throw py::value_error("states must have shape (" + std::to_string(B) + ", " + std::to_string(S) + "), got " +
                          shape_of(states_in));
  if (rtg_in.ndim() != 1 || rtg_in.shape(0) != B)
    throw py::value_error("returns_to_go must have shape (" + std::to_string(B) + ",), got " + shape_of(rtg_in));
  if (timesteps_in.ndim() != 1 || timesteps_in.shape(0) != B)
    throw py::value_error("timesteps must have shape (" + std::to_string(B) + ",), got " + shape_of(timesteps_in));
  auto states = CArray<float>::ensure(states_in);
  auto rtg = CArray<float>::ensure(rtg_in);
  auto timesteps = CArray<int64_t>::ensure(timesteps_in);
  if (!states || !rtg || !timesteps)
    throw py::value_error("states, returns_to_go and timesteps must be numeric arrays");
  py::array_t<float> actions({B, A});
  {
    py::gil_scoped_release release;
    e.step(states.data(), rtg.data(), timesteps.data(), actions.mutable_data());
  }
  return actions;
}

std::unique_ptr<dt::Controller> controller(std::unique_ptr<dt::Engine> engine, const py::array& mean,
                                           const py::array& std, double scale) {
  auto m = CArray<double>::ensure(mean), s = CArray<double>::ensure(std);
  if (!m || !s || m.ndim() != 1 || s.ndim() != 1) throw py::value_error("state_mean and state_std must be 1-D arrays");
  return std::make_unique<dt::Controller>(std::move(engine), std::vector<double>(m.data(), m.data() + m.size()),
                                          std::vector<double>(s.data(), s.data() + s.size()), scale);
}

py::array_t<float> controller_act(dt::Controller& c, const py::array& obs_in, const py::object& reward_in) {
  const int B = c.engine().batch(), S = c.engine().config().state_dim, A = c.engine().config().act_dim;
  const bool row = obs_in.ndim() == 1 && B == 1 && obs_in.shape(0) == S;
  if (!row && (obs_in.ndim() != 2 || obs_in.shape(0) != B || obs_in.shape(1) != S))
    throw py::value_error("obs must have shape (" + std::to_string(B) + ", " + std::to_string(S) + "), got " +
                          shape_of(obs_in));
  auto obs = CArray<float>::ensure(obs_in);
  if (!obs) throw py::value_error("obs must be a real-valued array");
  CArray<double> reward;  // default-constructed: an empty array, not a null one; `rewards` says whether given
  const double* rewards = nullptr;
  if (!reward_in.is_none()) {
    reward = CArray<double>::ensure(reward_in);
    if (!reward) throw py::value_error("reward must be a number or an array of numbers");
    if (!((reward.ndim() == 1 && reward.shape(0) == B) || (reward.ndim() == 0 && B == 1)))
      throw py::value_error("reward must have shape (" + std::to_string(B) + ",) (num_envs), got shape " +
                            shape_of(reward));
    rewards = reward.data();
  }
  py::array_t<float> actions = row ? py::array_t<float>(A) : py::array_t<float>({B, A});
  {
    py::gil_scoped_release release;
    c.act(obs.data(), rewards, actions.mutable_data());
  }
  return actions;
}

// Seconds of each of n steps with the same inputs, timed in C++: with the engine's lock taken per step as step()
// does, or held once around all of them. benchmarks/bench_policy.py compares the two to measure the lock's cost.
py::array_t<double> engine_step_latencies(dt::Engine& e, const py::array& states_in, const py::array& rtg_in,
                                          const py::array& timesteps_in, int n, bool lock_per_step) {
  const int B = e.batch(), A = e.config().act_dim;
  if (n < 1) throw py::value_error("n must be >= 1, got " + std::to_string(n));
  engine_step(e, states_in, rtg_in, timesteps_in);  // one untimed step, which checks the arguments
  auto states = CArray<float>::ensure(states_in);
  auto rtg = CArray<float>::ensure(rtg_in);
  auto timesteps = CArray<int64_t>::ensure(timesteps_in);
  std::vector<float> actions(static_cast<size_t>(B) * A);
  py::array_t<double> out(n);
  double* seconds = out.mutable_data();
  py::gil_scoped_release release;
  auto timed = [&](auto&& step) {
    for (int i = 0; i < n; ++i) {
      const auto start = std::chrono::steady_clock::now();
      step();
      seconds[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  };
  if (lock_per_step) {
    timed([&] { e.step(states.data(), rtg.data(), timesteps.data(), actions.data()); });
  } else {
    const auto held = e.lock();
    timed([&] { e.step(held, states.data(), rtg.data(), timesteps.data(), actions.data()); });
  }
  return out;
}

// A weight matrix (K, N) packed once for the engine's matmul kernel: out = a @ w with the columns split over
// threads as Engine does. Benchmarks time it for this machine's matmul rate (benchmarks/harness.py); tests check
// the kernel against numpy with it.
class PackedMatmul {
 public:
  PackedMatmul(const py::array& w_in, const std::string& isa) : kernels_(dt::kernels_select(isa)) {
    auto w = CArray<float>::ensure(w_in);
    if (!w || w.ndim() != 2 || w.shape(0) < 1 || w.shape(1) < 1)
      throw py::value_error("w must be a non-empty 2-D float array, got shape " + shape_of(w_in));
    K_ = static_cast<int>(w.shape(0)), N_ = static_cast<int>(w.shape(1));
    packed_.resize(static_cast<size_t>(K_) * N_);
    dt::pack_panels(packed_.data(), w.data(), N_, K_, N_, kernels_.panel);
  }

  py::array_t<float> operator()(const py::array& a_in, int threads) const {
    auto a = CArray<float>::ensure(a_in);
    if (!a || a.ndim() != 2 || a.shape(1) != K_)
      throw py::value_error("a must have shape (M, " + std::to_string(K_) + "), got " + shape_of(a_in));
    if (threads < 1) throw py::value_error("threads must be >= 1, got " + std::to_string(threads));
    const int M = static_cast<int>(a.shape(0));
    py::array_t<float> out({M, N_});
    float* o = out.mutable_data();
    const float* in = a.data();
    {
      py::gil_scoped_release release;
      auto part = [&](int i) {  // split as Engine::mm splits its columns
        const auto [n0, n1] = dt::panel_part(i, threads, N_, kernels_.panel);
        if (n0 < n1)
          kernels_.matmul_packed(o, N_, in, K_, packed_.data(), nullptr, M, K_, N_, n0, n1, false, nullptr);
      };
      std::vector<std::thread> team;
      for (int i = 1; i < threads; ++i) team.emplace_back(part, i);
      part(0);
      for (std::thread& t : team) t.join();
    }
    return out;
  }

  const char* isa() const { return kernels_.name; }

 private:
  dt::Kernels kernels_;
  int K_ = 0, N_ = 0;
  std::vector<float> packed_;
};

}  // namespace

void bind_engine(py::module_& m) {
  py::class_<PackedMatmul>(m, "PackedMatmul", "w (K, N) packed for the engine's matmul kernel: call(a) = a @ w.")
      .def(py::init<const py::array&, const std::string&>(), py::arg("w"), py::arg("isa") = "auto")
      .def("__call__", &PackedMatmul::operator(), py::arg("a"), py::arg("threads") = 1,
           "a (M, K) float32 -> a @ w (M, N), the columns split over `threads` threads.")
      .def_property_readonly("isa", &PackedMatmul::isa);

  py::class_<dt::Engine>(m, "Engine", "Decision Transformer CPU inference engine (see csrc/engine/engine.h).")
      .def(py::init(&engine_from_tensors), py::arg("config_json"), py::arg("tensors"), py::arg("batch"),
           py::arg("context_len"), py::arg("mode"), py::arg("n_threads") = 0, py::arg("isa") = "auto",
           "Build from a config.json string and float32 tensors in transformers' state-dict layout.")
      .def_static(
          "from_checkpoint",
          [](const std::string& dir, int batch, int context_len, const std::string& mode, int n_threads,
             const std::string& isa) {
            return std::make_unique<dt::Engine>(dt::load_checkpoint(dir), batch, context_len, dt::parse_mode(mode),
                                                n_threads, isa);
          },
          py::arg("path"), py::arg("batch"), py::arg("context_len"), py::arg("mode"), py::arg("n_threads") = 0,
          py::arg("isa") = "auto", "Load config.json + model.safetensors of a checkpoint directory.")
      .def("step", &engine_step, py::arg("states"), py::arg("returns_to_go"), py::arg("timesteps"),
           "One step for every row: states (B, S) float32, returns_to_go (B,), timesteps (B,) -> actions (B, A).")
      .def("_step_latencies", &engine_step_latencies, py::arg("states"), py::arg("returns_to_go"),
           py::arg("timesteps"), py::arg("n"), py::arg("lock_per_step"),
           "Benchmarks only: seconds of n steps with these inputs, the lock taken per step or once (n,).")
      .def(
          "reset", [](dt::Engine& e, int64_t row) { e.reset(row); }, py::arg("row"),
          py::call_guard<py::gil_scoped_release>(), "Start a new episode in `row`.")
      .def("steps_taken", &dt::Engine::steps_taken, py::arg("row"), py::call_guard<py::gil_scoped_release>(),
           "Steps since the row's last reset.")
      .def_property_readonly("batch", &dt::Engine::batch)
      .def_property_readonly("context_len", &dt::Engine::context_len)
      .def_property_readonly("mode",
                             [](const dt::Engine& e) { return e.mode() == dt::Mode::Exact ? "exact" : "rolling"; })
      .def_property_readonly("isa", &dt::Engine::isa)
      .def_property_readonly("threads", &dt::Engine::threads)
      .def_property_readonly("weight_bytes", &dt::Engine::weight_bytes)
      .def_property_readonly("state_dim", [](const dt::Engine& e) { return e.config().state_dim; })
      .def_property_readonly("act_dim", [](const dt::Engine& e) { return e.config().act_dim; });

  py::class_<dt::Controller>(m, "Controller",
                             "An Engine with the control loop's bookkeeping (see csrc/engine/controller.h).")
      .def(py::init([](const std::string& config_json, const py::dict& tensors, int batch, int context_len,
                       const std::string& mode, int n_threads, const py::array& mean, const py::array& std,
                       double scale) {
             return controller(engine_from_tensors(config_json, tensors, batch, context_len, mode, n_threads, "auto"),
                               mean, std, scale);
           }),
           py::arg("config_json"), py::arg("tensors"), py::arg("batch"), py::arg("context_len"), py::arg("mode"),
           py::arg("n_threads"), py::arg("state_mean"), py::arg("state_std"), py::arg("scale"),
           "Build the engine as Engine(...) does and wrap it.")
      .def_static(
          "from_checkpoint",
          [](const std::string& dir, int batch, int context_len, const std::string& mode, int n_threads,
             const py::array& mean, const py::array& std, double scale) {
            return controller(std::make_unique<dt::Engine>(dt::load_checkpoint(dir), batch, context_len,
                                                           dt::parse_mode(mode), n_threads),
                              mean, std, scale);
          },
          py::arg("path"), py::arg("batch"), py::arg("context_len"), py::arg("mode"), py::arg("n_threads"),
          py::arg("state_mean"), py::arg("state_std"), py::arg("scale"),
          "Load the engine from a checkpoint directory and wrap it.")
      .def("act", &controller_act, py::arg("obs"), py::arg("reward") = py::none(),
           "One step: obs (B, S) (or (S,) when B == 1), reward (B,) or None -> actions (B, A) (or (A,)).")
      .def(
          "set_target_returns",
          [](dt::Controller& c, const py::array& targets) {
            auto t = CArray<double>::ensure(targets);
            if (!t || t.ndim() != 1 || t.shape(0) != c.engine().batch())
              throw py::value_error("target returns must have shape (" + std::to_string(c.engine().batch()) + ",)");
            py::gil_scoped_release release;
            c.set_target_returns(t.data());
          },
          py::arg("targets"), "Return each row conditions on from its next reset (B,).")
      .def(
          "reset",
          [](dt::Controller& c, const py::array& rows) {
            auto r = CArray<int64_t>::ensure(rows);
            if (!r || r.ndim() != 1) throw py::value_error("rows must be a 1-D array of ints");
            py::gil_scoped_release release;
            for (py::ssize_t i = 0; i < r.shape(0); ++i) c.reset(r.data()[i]);
          },
          py::arg("rows"), "Start new episodes in `rows`.")
      .def_property_readonly("engine", &dt::Controller::engine, py::return_value_policy::reference_internal);
}

}  // namespace dt_py
