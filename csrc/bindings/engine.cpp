// Python face of the inference engine: dt_fast._C.Engine (normalised inputs) and dt_fast._C.Controller (the
// engine with the control loop's bookkeeping, raw observations and rewards). Thin: checks every array at the
// boundary, releases the GIL around the step. dt_fast/policy.py wraps the Controller with the step API.
// Both objects serialise their own calls with a lock (engine.h, "Thread safety"); every call that may wait for
// it releases the GIL first, so a thread waiting for an engine never holds up the other Python threads.
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "engine/controller.h"
#include "engine/engine.h"
#include "engine/packed_matmul.h"
#include "engine/sampling.h"

namespace dt_py {

namespace {

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// A model from a config.json string and float32 tensors in transformers' state-dict layout (copied).
dt::Model model_from_tensors(const std::string& config_json, const py::dict& tensors) {
  dt::Config config = dt::Config::from_json(dt::Json::parse(config_json, "config"), "config");
  std::map<std::string, dt::TensorView> views;
  std::vector<CArray<float>> keep;  // owns converted arrays until the weights are copied
  for (auto item : tensors) {
    std::string name = py::str(item.first);
    keep.push_back(read_array<float>(item.second, "weight '" + name + "'"));
    dt::TensorView v;
    for (py::ssize_t i = 0; i < keep.back().ndim(); ++i) v.shape.push_back(keep.back().shape(i));
    v.data = keep.back().data();
    views.emplace(name, std::move(v));
  }
  dt::Weights w = dt::Weights::from_tensors(config, views, "weights");
  return dt::Model{config, std::move(w)};
}

std::unique_ptr<dt::Engine> engine_from_tensors(const std::string& config_json, const py::dict& tensors, int batch,
                                                int context_len, const std::string& mode, int n_threads,
                                                const std::string& isa) {
  return std::make_unique<dt::Engine>(model_from_tensors(config_json, tensors), batch, context_len,
                                      dt::parse_mode(mode), n_threads, isa);
}

// A sampling seed from Python: None, or an integer in [0, 2**64) (a bool is refused).
std::optional<uint64_t> read_seed(const py::object& seed) {
  if (seed.is_none()) return std::nullopt;
  const std::string bad = "seed must be None or an integer in [0, 2**64), got " + py::repr(seed).cast<std::string>();
  if (py::isinstance<py::bool_>(seed)) throw py::value_error(bad);
  PyObject* index = PyNumber_Index(seed.ptr());
  if (index == nullptr) {
    PyErr_Clear();
    throw py::value_error(bad);
  }
  const unsigned long long value = PyLong_AsUnsignedLongLong(index);
  Py_DECREF(index);
  if (PyErr_Occurred()) {
    PyErr_Clear();
    throw py::value_error(bad);
  }
  return static_cast<uint64_t>(value);
}

py::object seed_of(const dt::Engine& e) {
  std::optional<uint64_t> seed;
  {
    py::gil_scoped_release release;  // the engine's lock may be held by a step
    seed = e.sample_seed();
  }
  return seed ? py::object(py::int_(*seed)) : py::object(py::none());
}

void set_sampling(dt::Engine& e, const py::object& seed_in) {
  const std::optional<uint64_t> seed = read_seed(seed_in);
  py::gil_scoped_release release;
  e.set_sampling(seed);
}

// The arguments of Engine.step, shapes checked, as arrays the engine reads.
struct StepInputs {
  CArray<float> states, rtg;
  CArray<int64_t> timesteps;
};

StepInputs step_inputs(const dt::Engine& e, const py::array& states, const py::array& rtg, const py::array& timesteps) {
  const int B = e.batch(), S = e.config().state_dim;
  if (states.ndim() != 2 || states.shape(0) != B || states.shape(1) != S)
    throw py::value_error("states must have shape (" + std::to_string(B) + ", " + std::to_string(S) + "), got " +
                          shape_of(states));
  if (rtg.ndim() != 1 || rtg.shape(0) != B)
    throw py::value_error("returns_to_go must have shape (" + std::to_string(B) + ",), got " + shape_of(rtg));
  if (timesteps.ndim() != 1 || timesteps.shape(0) != B)
    throw py::value_error("timesteps must have shape (" + std::to_string(B) + ",), got " + shape_of(timesteps));
  return {read_array<float>(states, "states"), read_array<float>(rtg, "returns_to_go"),
          read_array<int64_t>(timesteps, "timesteps")};
}

py::array_t<float> engine_step(dt::Engine& e, const py::array& states, const py::array& rtg,
                               const py::array& timesteps) {
  const StepInputs in = step_inputs(e, states, rtg, timesteps);
  py::array_t<float> actions({e.batch(), e.config().act_dim});
  {
    py::gil_scoped_release release;
    e.step(in.states.data(), in.rtg.data(), in.timesteps.data(), actions.mutable_data());
  }
  return actions;
}

// Seconds of each of n steps with the same inputs, timed in C++: with the engine's lock taken per step as step()
// does, or held once around all of them. benchmarks/bench_policy.py compares the two to measure the lock's cost.
py::array_t<double> engine_step_latencies(dt::Engine& e, const py::array& states, const py::array& rtg,
                                          const py::array& timesteps, int n, bool lock_per_step) {
  if (n < 1) throw py::value_error("n must be >= 1, got " + std::to_string(n));
  const StepInputs in = step_inputs(e, states, rtg, timesteps);
  std::vector<float> actions(static_cast<size_t>(e.batch()) * e.config().act_dim);
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
    timed([&] { e.step(in.states.data(), in.rtg.data(), in.timesteps.data(), actions.data()); });
  } else {
    const auto held = e.lock();
    timed([&] { e.step(held, in.states.data(), in.rtg.data(), in.timesteps.data(), actions.data()); });
  }
  return out;
}

std::unique_ptr<dt::Controller> controller(std::unique_ptr<dt::Engine> engine, const py::array& mean,
                                           const py::array& std, double scale) {
  auto m = read_array<double>(mean, "state_mean"), s = read_array<double>(std, "state_std");
  if (m.ndim() != 1 || s.ndim() != 1) throw py::value_error("state_mean and state_std must be 1-D arrays");
  return std::make_unique<dt::Controller>(std::move(engine), std::vector<double>(m.data(), m.data() + m.size()),
                                          std::vector<double>(s.data(), s.data() + s.size()), scale);
}

py::array_t<float> controller_act(dt::Controller& c, const py::array& obs_in, const py::object& reward_in) {
  const int B = c.engine().batch(), S = c.engine().config().state_dim, A = c.engine().config().act_dim;
  const bool row = obs_in.ndim() == 1 && B == 1 && obs_in.shape(0) == S;
  if (!row && (obs_in.ndim() != 2 || obs_in.shape(0) != B || obs_in.shape(1) != S))
    throw py::value_error("obs must have shape (" + std::to_string(B) + ", " + std::to_string(S) + "), got " +
                          shape_of(obs_in));
  auto obs = read_array<float>(obs_in, "obs");
  CArray<double> reward;  // default-constructed: an empty array, not a null one; `rewards` says whether given
  const double* rewards = nullptr;
  if (!reward_in.is_none()) {
    reward = read_array<double>(reward_in, "reward");
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

// The engine's noise for draws[i] of rows[i] (n, act_dim): the C++ side of dt_fast.distributions.normal_noise.
py::array_t<float> normal_noise(const py::object& seed_in, const py::object& rows_in, const py::object& draws_in,
                                int act_dim) {
  const std::optional<uint64_t> seed = read_seed(seed_in);
  if (!seed) throw py::value_error("seed must be an integer in [0, 2**64), got None");
  const auto rows = read_array<uint64_t>(rows_in, "rows"), draws = read_array<uint64_t>(draws_in, "draws");
  if (rows.ndim() != 1 || draws.ndim() != 1 || rows.shape(0) != draws.shape(0))
    throw py::value_error("rows and draws must be 1-D arrays of one length, got shapes " + shape_of(rows) + " and " +
                          shape_of(draws));
  if (act_dim < 1) throw py::value_error("act_dim must be >= 1, got " + std::to_string(act_dim));
  py::array_t<float> out({rows.shape(0), static_cast<py::ssize_t>(act_dim)});
  float* z = out.mutable_data();
  for (py::ssize_t i = 0; i < rows.shape(0); ++i) {
    const uint32_t counter = dt::noise_counter(*seed, rows.data()[i], draws.data()[i]);
    for (int j = 0; j < act_dim; ++j) z[i * act_dim + j] = dt::normal_noise(counter, static_cast<uint32_t>(j));
  }
  return out;
}

std::unique_ptr<dt::PackedMatmul> packed_matmul(const py::object& w_in, const std::string& isa) {
  auto w = read_array<float>(w_in, "w");
  if (w.ndim() != 2 || w.shape(0) < 1 || w.shape(1) < 1)
    throw py::value_error("w must be a non-empty 2-D float array, got shape " + shape_of(w));
  return std::make_unique<dt::PackedMatmul>(w.data(), static_cast<int>(w.shape(0)), static_cast<int>(w.shape(1)), isa);
}

py::array_t<float> packed_matmul_call(const dt::PackedMatmul& mm, const py::object& a_in, int threads) {
  auto a = read_array<float>(a_in, "a");
  if (a.ndim() != 2 || a.shape(1) != mm.K())
    throw py::value_error("a must have shape (M, " + std::to_string(mm.K()) + "), got " + shape_of(a));
  const int M = static_cast<int>(a.shape(0));
  py::array_t<float> out({M, mm.N()});
  float* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    mm(a.data(), M, o, threads);
  }
  return out;
}

}  // namespace

void bind_engine(py::module_& m) {
  py::class_<dt::PackedMatmul>(m, "PackedMatmul",
                               "w (K, N) packed for the engine's matmul kernel: call(a) = a @ w "
                               "(see csrc/engine/packed_matmul.h).")
      .def(py::init(&packed_matmul), py::arg("w"), py::arg("isa") = "auto")
      .def("__call__", &packed_matmul_call, py::arg("a"), py::arg("threads") = 1,
           "a (M, K) float32 -> a @ w (M, N), the columns split over `threads` threads.")
      .def_property_readonly("isa", &dt::PackedMatmul::isa);

  m.def("normal_noise", &normal_noise, py::arg("seed"), py::arg("rows"), py::arg("draws"), py::arg("act_dim"),
        "The engine's sampling noise (n, act_dim) float32 of draw draws[i] of row rows[i] under `seed` (tests compare "
        "it with dt_fast.distributions.normal_noise).");

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
      .def("_step_latencies", &engine_step_latencies, py::arg("states"), py::arg("returns_to_go"), py::arg("timesteps"),
           py::arg("n"), py::arg("lock_per_step"),
           "Benchmarks only: seconds of n steps with these inputs, the lock taken per step or once (n,).")
      .def(
          "reset", [](dt::Engine& e, int64_t row) { e.reset(row); }, py::arg("row"),
          py::call_guard<py::gil_scoped_release>(), "Start a new episode in `row`.")
      .def("steps_taken", &dt::Engine::steps_taken, py::arg("row"), py::call_guard<py::gil_scoped_release>(),
           "Steps since the row's last reset.")
      .def("set_sampling", &set_sampling, py::arg("seed"),
           "Sampled actions with the counter-based noise of `seed` (every row's draw counter restarts at 0), or the "
           "mean action with None (see csrc/engine/engine.h, Sampling).")
      .def(
          "load_weights",
          [](dt::Engine& e, const std::string& config_json, const py::dict& tensors) {
            dt::Model model = model_from_tensors(config_json, tensors);
            py::gil_scoped_release release;
            e.load_weights(std::move(model));
          },
          py::arg("config_json"), py::arg("tensors"),
          "New weights of the same config (re-packed in place); every row starts a new episode.")
      .def_property_readonly("sample_seed", &seed_of)
      .def_property_readonly("has_log_std", &dt::Engine::has_log_std)
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
            auto t = read_array<double>(targets, "targets");
            if (t.ndim() != 1 || t.shape(0) != c.engine().batch())
              throw py::value_error("target returns must have shape (" + std::to_string(c.engine().batch()) + ",)");
            py::gil_scoped_release release;
            c.set_target_returns(t.data());
          },
          py::arg("targets"), "Return each row conditions on from its next reset (B,).")
      .def(
          "reset",
          [](dt::Controller& c, const py::array& rows) {
            auto r = read_array<int64_t>(rows, "rows");
            if (r.ndim() != 1) throw py::value_error("rows must be a 1-D array of ints");
            py::gil_scoped_release release;
            for (py::ssize_t i = 0; i < r.shape(0); ++i) c.reset(r.data()[i]);
          },
          py::arg("rows"), "Start new episodes in `rows`.")
      .def(
          "set_sampling", [](dt::Controller& c, const py::object& seed) { set_sampling(c.engine(), seed); },
          py::arg("seed"), "The engine's set_sampling.")
      .def(
          "load_weights",
          [](dt::Controller& c, const std::string& config_json, const py::dict& tensors) {
            dt::Model model = model_from_tensors(config_json, tensors);
            py::gil_scoped_release release;
            c.load_weights(std::move(model));
          },
          py::arg("config_json"), py::arg("tensors"),
          "The engine's load_weights, then a new episode in every row (returns-to-go from the targets).")
      .def_property_readonly("sample_seed", [](dt::Controller& c) { return seed_of(c.engine()); })
      .def_property_readonly("engine", &dt::Controller::engine, py::return_value_policy::reference_internal);
}

}  // namespace dt_py
