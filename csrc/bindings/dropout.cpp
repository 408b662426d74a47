// Python face of the dropout mask generator and of dropout applied without a mask tensor.
#include <optional>
#include <string>

#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "train/dropout.h"

namespace dt_py {

using FloatArray = py::array_t<float, py::array::c_style>;

static void dropout_mask(FloatArray out, float p, uint64_t seed) {
  if (!out.writeable()) throw py::value_error("dropout_mask: out must be a writeable float32 array");
  float* data = out.mutable_data();
  const int64_t n = out.size();
  py::gil_scoped_release release;
  dt::dropout_mask(data, n, p, seed);
}

static void dropout_apply(FloatArray x, std::optional<FloatArray> residual, FloatArray out, float p,
                          uint64_t seed) {
  if (!out.writeable()) throw py::value_error("dropout_apply: out must be a writeable float32 array");
  if (out.size() != x.size() || (residual && residual->size() != x.size())) {
    throw py::value_error("dropout_apply: x (" + std::to_string(x.size()) + " elements), residual (" +
                          std::to_string(residual ? residual->size() : x.size()) + ") and out (" +
                          std::to_string(out.size()) + ") must have the same size");
  }
  const float* r = residual ? residual->data() : nullptr;
  float* dst = out.mutable_data();
  py::gil_scoped_release release;
  dt::dropout_apply(x.data(), r, dst, x.size(), p, seed);
}

void bind_dropout(py::module_& m) {
  m.def("dropout_mask", &dropout_mask, py::arg("out"), py::arg("p"), py::arg("seed"),
        "Fill a contiguous float32 array in place with 1/(1-p) (kept) or 0 (dropped), from a counter-based hash.");
  m.def("dropout_apply", &dropout_apply, py::arg("x"), py::arg("residual"), py::arg("out"), py::arg("p"),
        py::arg("seed"),
        "out = residual + x * dropout_mask(p, seed) (residual None: x * mask), all contiguous float32 of one size.");
}

}  // namespace dt_py
