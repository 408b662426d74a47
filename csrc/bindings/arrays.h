// Checked access to the numpy arrays of the training ops. They write their outputs in place, so an array they
// cannot write directly (another dtype, not C-contiguous, read-only) is refused with an error naming the
// argument, never converted to a temporary whose result would be lost; inputs are held to the same rule, so that
// nothing is copied behind the caller's back. Declare these arguments py::array with .noconvert().
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "bindings/bindings.h"

namespace dt_py {

// "float64 (2, 3) not C-contiguous": what an array is, for error messages.
std::string describe_array(const py::array& a);

// The data of `a` if it is a C-contiguous array of T with `shape` (-1: any length), else a ValueError naming
// `who` and `name`. writeable: the op writes it.
template <typename T>
T* checked_data(const py::array& a, const char* who, const char* name, std::initializer_list<int64_t> shape,
                bool writeable);

// The data of `a` if it is a C-contiguous array of T of any shape (used as flat), else a ValueError as above.
template <typename T>
T* checked_flat(const py::array& a, const char* who, const char* name, bool writeable);

// A float32 matrix whose rows may be spaced: shape (rows, cols), unit column stride, row stride ld >= cols.
struct RowMatrix {
  const float* data;
  int64_t rows, cols, ld;
};
RowMatrix checked_rows(const py::array& a, const char* who, const char* name);

}  // namespace dt_py
