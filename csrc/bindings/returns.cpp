// Python face of returns_to_go.
#include <string>

#include "bindings/bindings.h"
#include "sampler/returns.h"

namespace dt_py {

static py::array_t<float> returns_to_go(const py::object& rewards_in, const py::object& offsets_in, double gamma,
                                        double scale) {
  const auto rewards = read_array<float>(rewards_in, "rewards");
  const auto offsets = read_array<int64_t>(offsets_in, "offsets");
  if (rewards.ndim() != 1) throw py::value_error("rewards must be 1-D, got ndim=" + std::to_string(rewards.ndim()));
  if (offsets.ndim() != 1) throw py::value_error("offsets must be 1-D, got ndim=" + std::to_string(offsets.ndim()));
  py::array_t<float> out(rewards.shape(0));
  {
    py::gil_scoped_release release;
    dt::returns_to_go(rewards.data(), rewards.shape(0), offsets.data(), offsets.shape(0), gamma, scale,
                      out.mutable_data());
  }
  return out;
}

void bind_returns(py::module_& m) {
  m.def("returns_to_go", &returns_to_go, py::arg("rewards"), py::arg("offsets"), py::arg("gamma") = 1.0,
        py::arg("scale") = 1.0,
        "Discounted returns-to-go of every step divided by scale, episode by episode (float32 [n_steps]).");
}

}  // namespace dt_py
