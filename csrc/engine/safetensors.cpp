// SafetensorsFile::read: format of https://github.com/huggingface/safetensors (README "Format").
#include "engine/safetensors.h"

#include <cmath>
#include <cstring>
#include <fstream>

#include "common/check.h"
#include "engine/json.h"

namespace dt {

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// IEEE binary16 bits to float: sign, 5 exponent bits (bias 15), 10 mantissa bits.
float half_to_float(uint16_t h) {
  constexpr uint32_t kRebias = 127 - 15;  // float32's exponent bias minus binary16's
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  const uint32_t bits = sign | (exp == 0x1fu ? 0xffu << 23 : (exp + kRebias) << 23) | (mant << 13);  // 0x1f: inf/NaN
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// bfloat16 bits to float: the upper half of a float32.
float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// A dimension above this is no tensor of a model the engine runs (its file would exceed 16 GB); below it, a
// dimension converts to int64 exactly.
constexpr double kMaxDim = 4e9;

// Bytes per value of a supported dtype, 0 for any other.
int dtype_size(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  if (dtype == "F64") return 8;
  return 0;
}

// n values of `dtype` (little-endian, maybe unaligned) at `src` as float32.
std::vector<float> to_float32(const char* src, int64_t n, const std::string& dtype) {
  std::vector<float> out(static_cast<size_t>(n));
  if (dtype == "F64") {
    for (int64_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, src + 8 * i, sizeof(d));
      out[i] = static_cast<float>(d);
    }
    return out;
  }
  float (*convert)(uint16_t) = dtype == "F16" ? half_to_float : bf16_to_float;
  const auto* b = reinterpret_cast<const unsigned char*>(src);
  for (int64_t i = 0; i < n; ++i) out[i] = convert(static_cast<uint16_t>(b[2 * i] | b[2 * i + 1] << 8));
  return out;
}

}  // namespace

SafetensorsFile SafetensorsFile::read(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  DT_CHECK(in.good(), path, ": cannot open the weights file");
  std::streamoff size = in.tellg();
  DT_CHECK(size >= 8, path, ": not a safetensors file (", size, " bytes, shorter than the 8-byte header length)");
  SafetensorsFile f;
  f.bytes.resize(static_cast<size_t>(size));
  in.seekg(0);
  in.read(f.bytes.data(), size);
  DT_CHECK(in.good(), path, ": read error");
  uint64_t header_len = 0;
  for (int k = 7; k >= 0; --k) header_len = (header_len << 8) | static_cast<unsigned char>(f.bytes[k]);
  DT_CHECK(header_len <= static_cast<uint64_t>(size) - 8, path, ": header length ", header_len,
           " exceeds the file size ", size);
  const std::string source = path + " (safetensors header)";
  Json header = Json::parse(std::string(f.bytes.data() + 8, header_len), source);
  DT_CHECK(header.kind == Json::Kind::Object, source, ": expected a JSON object");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_len = static_cast<uint64_t>(size) - data_start;
  for (const auto& [name, entry] : header.object) {
    if (name == "__metadata__") continue;
    const std::string where = path + ": tensor '" + name + "'";
    DT_CHECK(entry.kind == Json::Kind::Object, where, ": entry must be an object");
    const Json& dtype = entry.at("dtype", where);
    DT_CHECK(dtype.kind == Json::Kind::String, where, ": dtype must be a string");
    const int size = dtype_size(dtype.string);
    DT_CHECK(size > 0, where, ": dtype ", dtype.string, " is not supported (the engine reads F32, F16, BF16, F64)");
    const Json& shape = entry.at("shape", where);
    DT_CHECK(shape.kind == Json::Kind::Array, where, ": shape must be an array");
    TensorView t;
    double count = 1.0;  // exact until it exceeds every file size, so the size check below bounds numel()
    for (const Json& d : shape.array) {
      DT_CHECK(d.kind == Json::Kind::Number && d.number >= 0 && d.number < kMaxDim && d.number == (int64_t)d.number,
               where, ": shape entries must be non-negative integers below ", kMaxDim);
      t.shape.push_back(static_cast<int64_t>(d.number));
      count *= d.number;
    }
    const Json& offsets = entry.at("data_offsets", where);
    DT_CHECK(offsets.kind == Json::Kind::Array && offsets.array.size() == 2, where,
             ": data_offsets must be [begin, end]");
    double b = offsets.array[0].number, e = offsets.array[1].number;
    DT_CHECK(offsets.array[0].kind == Json::Kind::Number && offsets.array[1].kind == Json::Kind::Number && b >= 0 &&
                 b <= e && e <= static_cast<double>(data_len),
             where, ": data_offsets [", b, ", ", e, "] outside the data section of ", data_len, " bytes");
    DT_CHECK(count * size == e - b, where, ": ", e - b, " bytes do not hold ", count, " ", dtype.string, " values");
    const char* src = f.bytes.data() + data_start + static_cast<uint64_t>(b);
    if (dtype.string == "F32") {
      t.data = reinterpret_cast<const float*>(src);
    } else {
      f.converted.push_back(to_float32(src, t.numel(), dtype.string));
      t.data = f.converted.back().data();  // stays put when `converted` grows: moving a vector keeps its buffer
    }
    f.tensors.emplace(name, std::move(t));
  }
  return f;
}

}  // namespace dt
