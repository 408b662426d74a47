// SafetensorsFile::read: format of https://github.com/huggingface/safetensors (README "Format").
#include "engine/safetensors.h"

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
    DT_CHECK(dtype.string == "F32", where, ": dtype ", dtype.string, " is not supported (the engine reads F32)");
    const Json& shape = entry.at("shape", where);
    DT_CHECK(shape.kind == Json::Kind::Array, where, ": shape must be an array");
    TensorView t;
    for (const Json& d : shape.array) {
      DT_CHECK(d.kind == Json::Kind::Number && d.number >= 0 && d.number < 4e9 && d.number == (int64_t)d.number,
               where, ": shape entries must be non-negative integers");
      t.shape.push_back(static_cast<int64_t>(d.number));
    }
    const Json& offsets = entry.at("data_offsets", where);
    DT_CHECK(offsets.kind == Json::Kind::Array && offsets.array.size() == 2, where,
             ": data_offsets must be [begin, end]");
    double b = offsets.array[0].number, e = offsets.array[1].number;
    DT_CHECK(offsets.array[0].kind == Json::Kind::Number && offsets.array[1].kind == Json::Kind::Number && b >= 0 &&
                 b <= e && e <= static_cast<double>(data_len),
             where, ": data_offsets [", b, ", ", e, "] outside the data section of ", data_len, " bytes");
    DT_CHECK(static_cast<double>(t.numel()) * 4.0 == e - b, where, ": ", e - b, " bytes do not hold ", t.numel(),
             " float32 values");
    t.data = reinterpret_cast<const float*>(f.bytes.data() + data_start + static_cast<uint64_t>(b));
    f.tensors.emplace(name, std::move(t));
  }
  return f;
}

}  // namespace dt
