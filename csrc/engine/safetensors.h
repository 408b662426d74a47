// A safetensors reader: 8-byte little-endian header length, a JSON header, then raw little-endian tensors.
// Floating-point tensors only: F32 is read in place; F16, BF16 and F64 are converted to float32 (F16 and BF16
// exactly, F64 rounded to nearest, as torch's .float()). Every offset and size is validated; errors name the file.
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

// A whole safetensors file in memory; `tensors` point into `bytes` (F32) or `converted` (other dtypes).
struct SafetensorsFile {
  std::vector<char> bytes;
  std::vector<std::vector<float>> converted;  // one per tensor stored in another dtype
  std::map<std::string, TensorView> tensors;
  // Read and validate `path`; throws std::invalid_argument naming the file and the bad entry.
  static SafetensorsFile read(const std::string& path);
};

}  // namespace dt
