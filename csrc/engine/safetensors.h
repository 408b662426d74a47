// A safetensors reader: 8-byte little-endian header length, a JSON header, then raw little-endian tensors.
// Only float32 ("F32") tensors are accepted; every offset and size is validated and errors name the file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dt {

// A float32 tensor that does not own its data (row-major).
struct TensorView {
  std::vector<int64_t> shape;
  const float* data = nullptr;  // may be unaligned: read through memcpy-safe copies only
  int64_t numel() const;
};

// A whole safetensors file in memory; `tensors` point into `bytes`.
struct SafetensorsFile {
  std::vector<char> bytes;
  std::map<std::string, TensorView> tensors;
  // Read and validate `path`; throws std::invalid_argument naming the file and the bad entry.
  static SafetensorsFile read(const std::string& path);
};

}  // namespace dt
