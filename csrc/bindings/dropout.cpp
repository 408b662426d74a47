// Python face of the dropout mask generator.
#include <string>

#include "bindings/bindings.h"
#include "train/dropout.h"

namespace dt_py {

static void dropout_mask(py::array_t<float, py::array::c_style> out, float p, uint64_t seed) {
  if (!out.writeable()) throw py::value_error("dropout_mask: out must be a writeable float32 array");
  float* data = out.mutable_data();
  const int64_t n = out.size();
  py::gil_scoped_release release;
  dt::dropout_mask(data, n, p, seed);
}

void bind_dropout(py::module_& m) {
  m.def("dropout_mask", &dropout_mask, py::arg("out"), py::arg("p"), py::arg("seed"),
        "Fill a contiguous float32 array in place with 1/(1-p) (kept) or 0 (dropped), from a counter-based hash.");
}

}  // namespace dt_py
