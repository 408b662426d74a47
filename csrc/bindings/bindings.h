// One binder per component; module.cpp calls each. Only files in csrc/bindings/ include pybind11.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace dt_py {

namespace py = pybind11;

// A C-contiguous numpy array of T; other layouts and dtypes are converted on the way in.
template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

void bind_returns(py::module_& m);
void bind_dropout(py::module_& m);
void bind_train_ops(py::module_& m);
void bind_engine(py::module_& m);
void bind_sampler(py::module_& m);

}  // namespace dt_py
