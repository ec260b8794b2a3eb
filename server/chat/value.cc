#include "server/chat/value.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvfold::chat {

Value Value::FromJson(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return MakeNone();
    case nlohmann::ordered_json::value_t::boolean:
      return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float:
      return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList list;
      for (const auto& e : j) list.push_back(FromJson(e));
      return Value(std::move(list));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict dict;
      for (const auto& [k, v] : j.items()) dict.emplace_back(k, FromJson(v));
      return Value(std::move(dict));
    }
    default:
      return MakeNone();  // binary and discarded values do not occur in parsed JSON
  }
}

bool Value::Truthy() const {
  if (is_undefined() || is_none()) return false;
  if (is_bool()) return as_bool();
  if (is_int()) return as_int() != 0;
  if (is_float()) return as_double() != 0.0;
  if (is_string()) return !as_string().empty();
  if (is_list()) return !as_list().empty();
  if (is_dict()) return !as_dict().empty();
  return true;
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string s = buf;
  // Python switches to exponents at 1e16 and below 1e-4; %g at the precision used. Re-render
  // positional values the way repr does.
  size_t e = s.find('e');
  if (e != std::string::npos) {
    int exponent = std::atoi(s.c_str() + e + 1);
    if (exponent >= -4 && exponent < 16) {
      std::snprintf(buf, sizeof(buf), "%.*f", std::max(0, 16 - exponent), d);
      s = buf;
      // trim to the shortest that round-trips
      while (s.back() == '0' && std::strtod(s.substr(0, s.size() - 1).c_str(), nullptr) == d) {
        s.pop_back();
      }
      if (s.back() == '.') s.push_back('0');
      return s;
    }
    // Python writes e+16 / e-05 as "e+16" / "e-05": two-digit exponents at least.
    std::string mantissa = s.substr(0, e);
    std::string sign = exponent < 0 ? "-" : "+";
    return absl::StrFormat("%se%s%02d", mantissa, sign, std::abs(exponent));
  }
  if (s.find('.') == std::string::npos && s.find("inf") == std::string::npos) s += ".0";
  return s;
}

std::string Value::Str() const {
  if (is_undefined()) return "";
  if (is_string()) return as_string();
  return Repr();
}

static std::string StringRepr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

std::string Value::Repr() const {
  if (is_undefined()) return "";
  if (is_none()) return "None";
  if (is_bool()) return as_bool() ? "True" : "False";
  if (is_int()) return absl::StrCat(as_int());
  if (is_float()) return FloatRepr(as_double());
  if (is_string()) return StringRepr(as_string());
  if (is_list()) {
    std::string out = "[";
    for (size_t i = 0; i < as_list().size(); ++i) {
      if (i) out += ", ";
      out += as_list()[i].Repr();
    }
    return out + "]";
  }
  if (is_dict()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, v] : as_dict()) {
      if (!first) out += ", ";
      first = false;
      out += StringRepr(k) + ": " + v.Repr();
    }
    return out + "}";
  }
  if (is_namespace()) return "<Namespace>";
  return "<function>";
}

const Value* Value::Find(const std::string& key) const {
  const ValueDict* dict = nullptr;
  if (is_dict()) dict = &as_dict();
  if (is_namespace()) dict = &as_namespace().attrs;
  if (dict == nullptr) return nullptr;
  for (const auto& [k, v] : *dict) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::string Value::TypeName() const {
  if (is_undefined()) return "Undefined";
  if (is_none()) return "NoneType";
  if (is_bool()) return "bool";
  if (is_int()) return "int";
  if (is_float()) return "float";
  if (is_string()) return "str";
  if (is_list()) return "list";
  if (is_dict()) return "dict";
  if (is_namespace()) return "Namespace";
  return "function";
}

bool ValuesEqual(const Value& a, const Value& b) {
  auto numeric = [](const Value& v) { return v.is_number() || v.is_bool(); };
  if (numeric(a) && numeric(b)) {
    auto as_num = [](const Value& v) { return v.is_bool() ? double(v.as_bool()) : v.as_double(); };
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    return as_num(a) == as_num(b);
  }
  if (a.is_none() || b.is_none()) return a.is_none() && b.is_none();
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_string() && b.is_string()) return a.as_string() == b.as_string();
  if (a.is_list() && b.is_list()) {
    if (a.as_list().size() != b.as_list().size()) return false;
    for (size_t i = 0; i < a.as_list().size(); ++i) {
      if (!ValuesEqual(a.as_list()[i], b.as_list()[i])) return false;
    }
    return true;
  }
  if (a.is_dict() && b.is_dict()) {
    if (a.as_dict().size() != b.as_dict().size()) return false;
    for (const auto& [k, v] : a.as_dict()) {
      const Value* other = b.Find(k);
      if (other == nullptr || !ValuesEqual(v, *other)) return false;
    }
    return true;
  }
  if (a.is_namespace() && b.is_namespace()) return &a.as_namespace() == &b.as_namespace();
  return false;
}

static void JsonString(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

static absl::Status JsonValue(const Value& v, int indent, int depth, std::string& out) {
  if (depth > 200) return absl::InvalidArgumentError("tojson: value nested too deeply");
  auto newline = [&](int d) {
    if (indent >= 0) {
      out += '\n';
      out.append(static_cast<size_t>(indent * d), ' ');
    }
  };
  const char* item_sep = indent >= 0 ? "," : ", ";
  if (v.is_none()) {
    out += "null";
  } else if (v.is_bool()) {
    out += v.as_bool() ? "true" : "false";
  } else if (v.is_int()) {
    out += absl::StrCat(v.as_int());
  } else if (v.is_float()) {
    double d = v.as_double();
    out += std::isnan(d)   ? "NaN"
           : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity")
                           : FloatRepr(d);
  } else if (v.is_string()) {
    JsonString(v.as_string(), out);
  } else if (v.is_list()) {
    if (v.as_list().empty()) {
      out += "[]";
      return absl::OkStatus();
    }
    out += '[';
    for (size_t i = 0; i < v.as_list().size(); ++i) {
      if (i) out += item_sep;
      newline(depth + 1);
      if (auto s = JsonValue(v.as_list()[i], indent, depth + 1, out); !s.ok()) return s;
    }
    newline(depth);
    out += ']';
  } else if (v.is_dict() || v.is_namespace()) {
    const ValueDict& d = v.is_dict() ? v.as_dict() : v.as_namespace().attrs;
    if (d.empty()) {
      out += "{}";
      return absl::OkStatus();
    }
    out += '{';
    bool first = true;
    for (const auto& [k, e] : d) {
      if (!first) out += item_sep;
      first = false;
      newline(depth + 1);
      JsonString(k, out);
      out += ": ";
      if (auto s = JsonValue(e, indent, depth + 1, out); !s.ok()) return s;
    }
    newline(depth);
    out += '}';
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("Object of type ", v.TypeName(), " is not JSON serializable"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ToJson(const Value& value, int indent) {
  std::string out;
  if (auto s = JsonValue(value, indent, 0, out); !s.ok()) return s;
  return out;
}

const Value* CallArgs::Get(size_t pos, const std::string& name) const {
  for (const auto& [k, v] : keyword) {
    if (k == name) return &v;
  }
  if (pos < positional.size()) return &positional[pos];
  return nullptr;
}

}  // namespace kvfold::chat
