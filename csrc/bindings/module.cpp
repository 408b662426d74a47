// dt_fast._C: the C++ core seen from Python.
#include "bindings/bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "dt_fast C++ core";
  dt_py::bind_returns(m);
  dt_py::bind_dropout(m);
  dt_py::bind_train_ops(m);
  dt_py::bind_engine(m);
  dt_py::bind_sampler(m);
}
