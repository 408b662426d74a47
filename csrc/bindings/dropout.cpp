// Python face of the dropout mask generator (the reference the vector kernels are tested against).
#include "train/dropout.h"
#include "bindings/arrays.h"
#include "bindings/bindings.h"

namespace dt_py {

static void dropout_mask(const py::array& out, float p, uint64_t seed) {
  float* data = checked_flat<float>(out, "dropout_mask", "out", true);
  const int64_t n = out.size();
  py::gil_scoped_release release;
  dt::dropout_mask(data, n, p, seed);
}

void bind_dropout(py::module_& m) {
  m.def("dropout_mask", &dropout_mask, py::arg("out").noconvert(), py::arg("p"), py::arg("seed"),
        "Fill a C-contiguous float32 array in place with 1/(1-p) (kept) or 0 (dropped), from a counter-based hash.");
}

}  // namespace dt_py
