#include "bindings/arrays.h"

namespace dt_py {

namespace {

std::string shape_text(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string wanted_text(std::initializer_list<int64_t> shape) {
  std::string s = "(";
  int d = 0;
  for (int64_t n : shape) s += (d++ ? ", " : "") + (n < 0 ? std::string("*") : std::to_string(n));
  return s + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace

std::string describe_array(const py::array& a) {
  std::string s = py::str(a.dtype()).cast<std::string>() + " " + shape_text(a);
  if (!(a.flags() & py::array::c_style)) s += " not C-contiguous";
  if (!a.writeable()) s += " read-only";
  return s;
}

template <typename T>
T* checked_data(const py::array& a, const char* who, const char* name, std::initializer_list<int64_t> shape,
                bool writeable) {
  bool ok = py::isinstance<py::array_t<T>>(a) && (a.flags() & py::array::c_style) && (!writeable || a.writeable()) &&
            a.ndim() == static_cast<py::ssize_t>(shape.size());
  int d = 0;
  for (int64_t n : shape) {
    ok = ok && (n < 0 || a.shape(d) == n);
    ++d;
  }
  if (!ok) {
    throw py::value_error(std::string(who) + ": " + name + " must be a " + (writeable ? "writeable " : "") +
                          "C-contiguous " + py::str(py::dtype::of<T>()).cast<std::string>() + " array of shape " +
                          wanted_text(shape) + ", got " + describe_array(a));
  }
  return static_cast<T*>(const_cast<void*>(a.data()));
}

template <typename T>
T* checked_flat(const py::array& a, const char* who, const char* name, bool writeable) {
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style) || (writeable && !a.writeable())) {
    throw py::value_error(std::string(who) + ": " + name + " must be a " + (writeable ? "writeable " : "") +
                          "C-contiguous " + py::str(py::dtype::of<T>()).cast<std::string>() + " array, got " +
                          describe_array(a));
  }
  return static_cast<T*>(const_cast<void*>(a.data()));
}

template float* checked_flat<float>(const py::array&, const char*, const char*, bool);
template float* checked_data<float>(const py::array&, const char*, const char*, std::initializer_list<int64_t>, bool);
template int64_t* checked_data<int64_t>(const py::array&, const char*, const char*, std::initializer_list<int64_t>,
                                        bool);
template int32_t* checked_data<int32_t>(const py::array&, const char*, const char*, std::initializer_list<int64_t>,
                                        bool);
template uint8_t* checked_data<uint8_t>(const py::array&, const char*, const char*, std::initializer_list<int64_t>,
                                        bool);

RowMatrix checked_rows(const py::array& a, const char* who, const char* name) {
  const auto f = static_cast<py::ssize_t>(sizeof(float));
  const bool spaced = a.ndim() == 2 && a.shape(0) > 1;  // the row stride of one row means nothing
  if (!py::isinstance<py::array_t<float>>(a) || a.ndim() != 2 || (a.shape(1) > 1 && a.strides(1) != f) ||
      (spaced && (a.strides(0) % f != 0 || a.strides(0) < a.shape(1) * f))) {
    throw py::value_error(std::string(who) + ": " + name + " must be a float32 matrix with contiguous rows, got " +
                          describe_array(a));
  }
  return {static_cast<const float*>(a.data()), a.shape(0), a.shape(1), spaced ? a.strides(0) / f : a.shape(1)};
}

}  // namespace dt_py
