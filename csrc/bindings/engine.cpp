// Python face of the inference engine: dt_fast._C.Engine. Thin: checks every array at the boundary, releases
// the GIL around the step. dt_fast/policy.py wraps it with the step API.
#include <map>
#include <string>

#include "bindings/bindings.h"
#include "engine/engine.h"

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

}  // namespace

void bind_engine(py::module_& m) {
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
      .def(
          "reset", [](dt::Engine& e, int64_t row) { e.reset(row); }, py::arg("row"), "Start a new episode in `row`.")
      .def("steps_taken", &dt::Engine::steps_taken, py::arg("row"), "Steps since the row's last reset.")
      .def_property_readonly("batch", &dt::Engine::batch)
      .def_property_readonly("context_len", &dt::Engine::context_len)
      .def_property_readonly("mode",
                             [](const dt::Engine& e) { return e.mode() == dt::Mode::Exact ? "exact" : "rolling"; })
      .def_property_readonly("isa", &dt::Engine::isa)
      .def_property_readonly("threads", &dt::Engine::threads)
      .def_property_readonly("weight_bytes", &dt::Engine::weight_bytes)
      .def_property_readonly("state_dim", [](const dt::Engine& e) { return e.config().state_dim; })
      .def_property_readonly("act_dim", [](const dt::Engine& e) { return e.config().act_dim; });
}

}  // namespace dt_py
