// A minimal JSON reader for the engine's two inputs: config.json and the safetensors header.
// Parses the full JSON grammar (objects, arrays, strings with escapes, numbers, true/false/null) into a tree;
// throws std::invalid_argument (via DT_CHECK) naming the byte offset of the first syntax error.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dt {

struct Json {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Json> array;
  std::map<std::string, Json> object;

  // Parse `text`; `source` names the file in error messages.
  static Json parse(const std::string& text, const std::string& source);

  bool has(const std::string& key) const { return kind == Kind::Object && object.count(key) > 0; }
  // Member `key` of an object; throws naming `source` and the key when absent.
  const Json& at(const std::string& key, const std::string& source) const;
};

// Typed accessors for config fields: throw naming `source` and `key` when absent or of the wrong type.
int64_t json_int(const Json& obj, const std::string& key, const std::string& source);
int64_t json_int_or(const Json& obj, const std::string& key, int64_t fallback, const std::string& source);
double json_number_or(const Json& obj, const std::string& key, double fallback, const std::string& source);
bool json_bool_or(const Json& obj, const std::string& key, bool fallback, const std::string& source);
std::string json_string_or(const Json& obj, const std::string& key, const std::string& fallback,
                           const std::string& source);

}  // namespace dt
