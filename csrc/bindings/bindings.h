// One binder per component; module.cpp calls each. Only files in csrc/bindings/ include pybind11.
#pragma once

#include <string>
#include <type_traits>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace dt_py {

namespace py = pybind11;

// A C-contiguous numpy array of T; other layouts and dtypes are converted on the way in.
template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// `obj` (an array or anything numpy turns into one) as a CArray<T> that C++ only reads. Other layouts and number
// types are converted, but not where a value would lose its meaning: floating-point or complex numbers to an
// integer T (truncated), booleans to an integer T, complex numbers to a real T (imaginary part dropped), or
// anything that is not a number. Throws ValueError naming `name`. (An array C++ writes into in place must not be
// converted at all: its result would go to a temporary; none of engine, sampler and returns has one.)
template <typename T>
CArray<T> read_array(const py::handle& obj, const std::string& name) {
  py::array a = py::array::ensure(obj);
  const char kind = a ? a.dtype().kind() : 'O';
  constexpr bool integral = std::is_integral_v<T>;
  const bool ok = kind == 'i' || kind == 'u' || (!integral && (kind == 'f' || kind == 'b'));
  if (!ok)
    throw py::value_error(name + " must be " + (integral ? "an integer" : "a real-valued") + " array, got " +
                          (a ? "dtype " + py::str(a.dtype()).cast<std::string>()
                             : "a " + py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>()));
  CArray<T> out = CArray<T>::ensure(a);
  if (!out) throw py::value_error(name + ": cannot convert dtype " + py::str(a.dtype()).cast<std::string>());
  return out;
}

void bind_returns(py::module_& m);
void bind_dropout(py::module_& m);
void bind_train_ops(py::module_& m);
void bind_engine(py::module_& m);
void bind_sampler(py::module_& m);

}  // namespace dt_py
