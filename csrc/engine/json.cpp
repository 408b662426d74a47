// Recursive-descent JSON parser (RFC 8259), small enough to audit; see json.h.
#include "engine/json.h"

#include <cmath>
#include <cstdlib>

#include "common/check.h"

namespace dt {

namespace {

// Deeper nesting is no config.json or safetensors header; the bound keeps the recursion's stack small.
constexpr int kMaxDepth = 64;

struct Parser {
  const std::string& s;
  const std::string& source;
  size_t i = 0;
  int depth = 0;

  [[noreturn]] void error(const char* what) const { fail(source, ": invalid JSON at byte ", i, ": ", what); }

  void skip_ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
  }

  bool consume(const char* word) {
    size_t n = std::char_traits<char>::length(word);
    if (s.compare(i, n, word) != 0) return false;
    i += n;
    return true;
  }

  Json value() {
    skip_ws();
    if (i >= s.size()) error("unexpected end of input");
    if (++depth > kMaxDepth) error(("nesting deeper than " + std::to_string(kMaxDepth)).c_str());
    Json v;
    char c = s[i];
    if (c == '{') {
      v.kind = Json::Kind::Object;
      ++i;
      skip_ws();
      if (i < s.size() && s[i] == '}') {
        ++i;
      } else {
        while (true) {
          skip_ws();
          if (i >= s.size() || s[i] != '"') error("expected a string key");
          std::string key = string();
          skip_ws();
          if (i >= s.size() || s[i] != ':') error("expected ':'");
          ++i;
          v.object[key] = value();
          skip_ws();
          if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
          }
          if (i < s.size() && s[i] == '}') {
            ++i;
            break;
          }
          error("expected ',' or '}'");
        }
      }
    } else if (c == '[') {
      v.kind = Json::Kind::Array;
      ++i;
      skip_ws();
      if (i < s.size() && s[i] == ']') {
        ++i;
      } else {
        while (true) {
          v.array.push_back(value());
          skip_ws();
          if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
          }
          if (i < s.size() && s[i] == ']') {
            ++i;
            break;
          }
          error("expected ',' or ']'");
        }
      }
    } else if (c == '"') {
      v.kind = Json::Kind::String;
      v.string = string();
    } else if (consume("true")) {
      v.kind = Json::Kind::Bool;
      v.boolean = true;
    } else if (consume("false")) {
      v.kind = Json::Kind::Bool;
    } else if (consume("null")) {
      v.kind = Json::Kind::Null;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Json::Kind::Number;
      v.number = number();
    } else {
      error("unexpected character");
    }
    --depth;
    return v;
  }

  double number() {
    size_t start = i;
    if (s[i] == '-') ++i;
    auto digits = [&] {
      size_t d = i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
      if (i == d) error("expected a digit");
    };
    digits();
    if (i < s.size() && s[i] == '.') {
      ++i;
      digits();
    }
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
      ++i;
      if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
      digits();
    }
    return std::strtod(s.substr(start, i - start).c_str(), nullptr);
  }

  std::string string() {
    ++i;  // opening quote
    std::string out;
    while (true) {
      if (i >= s.size()) error("unterminated string");
      char c = s[i++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) error("unterminated escape");
      char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (i + 4 > s.size()) error("short \\u escape");
          unsigned code = 0;
          for (int k = 0; k < 4; ++k) {
            char h = s[i++];
            code <<= 4;
            if (h >= '0' && h <= '9') code |= h - '0';
            else if (h >= 'a' && h <= 'f') code |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') code |= h - 'A' + 10;
            else error("bad hex digit in \\u escape");
          }
          // UTF-8 encode the code unit (surrogate pairs are kept as two 3-byte units: names here are ASCII).
          if (code < 0x80) {
            out += static_cast<char>(code);
          } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
          }
          break;
        }
        default: error("bad escape");
      }
    }
  }
};

}  // namespace

Json Json::parse(const std::string& text, const std::string& source) {
  Parser p{text, source};
  Json v = p.value();
  p.skip_ws();
  if (p.i != text.size()) p.error("trailing characters after the value");
  return v;
}

const Json& Json::at(const std::string& key, const std::string& source) const {
  DT_CHECK(kind == Kind::Object, source, ": expected a JSON object holding '", key, "'");
  auto it = object.find(key);
  DT_CHECK(it != object.end(), source, ": missing key '", key, "'");
  return it->second;
}

int64_t json_int(const Json& obj, const std::string& key, const std::string& source) {
  const Json& v = obj.at(key, source);
  DT_CHECK(v.kind == Json::Kind::Number && std::floor(v.number) == v.number && std::fabs(v.number) < 9e15, source,
           ": '", key, "' must be an integer");
  return static_cast<int64_t>(v.number);
}

int64_t json_int_or(const Json& obj, const std::string& key, int64_t fallback, const std::string& source) {
  if (!obj.has(key) || obj.object.at(key).kind == Json::Kind::Null) return fallback;
  return json_int(obj, key, source);
}

double json_number_or(const Json& obj, const std::string& key, double fallback, const std::string& source) {
  if (!obj.has(key)) return fallback;
  const Json& v = obj.object.at(key);
  DT_CHECK(v.kind == Json::Kind::Number, source, ": '", key, "' must be a number");
  return v.number;
}

bool json_bool_or(const Json& obj, const std::string& key, bool fallback, const std::string& source) {
  if (!obj.has(key)) return fallback;
  const Json& v = obj.object.at(key);
  DT_CHECK(v.kind == Json::Kind::Bool, source, ": '", key, "' must be true or false");
  return v.boolean;
}

std::string json_string_or(const Json& obj, const std::string& key, const std::string& fallback,
                           const std::string& source) {
  if (!obj.has(key)) return fallback;
  const Json& v = obj.object.at(key);
  DT_CHECK(v.kind == Json::Kind::String, source, ": '", key, "' must be a string");
  return v.string;
}

}  // namespace dt
