// DT_CHECK: validate an argument and throw std::invalid_argument with a message.
// pybind11 turns the exception into a Python ValueError; nothing here calls exit().
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace dt {

template <typename... Args>
[[noreturn]] void fail(const Args&... parts) {
  std::ostringstream msg;
  (msg << ... << parts);
  throw std::invalid_argument(msg.str());
}

}  // namespace dt

#define DT_CHECK(cond, ...)             \
  do {                                  \
    if (!(cond)) dt::fail(__VA_ARGS__); \
  } while (0)
