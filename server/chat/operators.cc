#include "server/chat/operators.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/chat/py_string.h"

namespace kvfold::chat {
namespace {

// Strings or lists made by `*` past this size are refused rather than exhausting memory.
constexpr size_t kMaxRepeatBytes = size_t{64} << 20;

bool IsIntLike(const Value& v) { return v.is_int() || v.is_bool(); }
int64_t IntOf(const Value& v) { return v.is_bool() ? int64_t{v.as_bool()} : v.as_int(); }
bool IsNumeric(const Value& v) { return v.is_number() || v.is_bool(); }
double DoubleOf(const Value& v) { return v.is_bool() ? double(v.as_bool()) : v.as_double(); }

absl::Status Unsupported(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) {
    const Value& u = a.is_undefined() ? a : b;
    return absl::InvalidArgumentError(absl::StrCat("'", u.undefined_name(), "' is undefined"));
  }
  if (op == "+" && a.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("can only concatenate str (not \"", b.TypeName(), "\") to str"));
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported operand type(s) for ", op, ": '",
                                                 a.TypeName(), "' and '", b.TypeName(), "'"));
}

absl::StatusOr<Value> Repeat(const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_string() ? Value(std::string()) : Value(ValueList{});
  size_t unit = seq.is_string() ? seq.as_string().size() : seq.as_list().size() * 16;
  if (unit > 0 && static_cast<uint64_t>(n) > kMaxRepeatBytes / unit) {
    return absl::ResourceExhaustedError("repetition result too large");
  }
  if (seq.is_string()) {
    std::string out;
    for (int64_t i = 0; i < n; ++i) out += seq.as_string();
    return Value(std::move(out));
  }
  ValueList out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.as_list().begin(), seq.as_list().end());
  return Value(std::move(out));
}

absl::StatusOr<Value> Arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
    if (a.is_list() && b.is_list()) {
      ValueList out = a.as_list();
      out.insert(out.end(), b.as_list().begin(), b.as_list().end());
      return Value(std::move(out));
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && IsIntLike(b)) return Repeat(a, IntOf(b));
    if ((b.is_string() || b.is_list()) && IsIntLike(a)) return Repeat(b, IntOf(a));
  }
  if (!IsNumeric(a) || !IsNumeric(b)) return Unsupported(op, a, b);
  if (IsIntLike(a) && IsIntLike(b) && op != "/") {
    int64_t x = IntOf(a), y = IntOf(b), r = 0;
    if (op == "+" && !__builtin_add_overflow(x, y, &r)) return Value(r);
    if (op == "-" && !__builtin_sub_overflow(x, y, &r)) return Value(r);
    if (op == "*" && !__builtin_mul_overflow(x, y, &r)) return Value(r);
    if (op == "//" || op == "%") {
      if (y == 0) return absl::InvalidArgumentError("integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) return absl::OutOfRangeError("integer overflow");
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {
        --q;
        m += y;
      }
      return op == "//" ? Value(q) : Value(m);
    }
    if (op == "**" && y >= 0) {
      int64_t result = 1;
      for (int64_t i = 0; i < y; ++i) {
        if (__builtin_mul_overflow(result, x, &result)) {
          return absl::OutOfRangeError("integer overflow");
        }
        if (result == 0 || result == 1) break;
      }
      return Value(result);
    }
    if (op != "**") return absl::OutOfRangeError("integer overflow");
  }
  double x = DoubleOf(a), y = DoubleOf(b);
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  if (op == "**") return Value(std::pow(x, y));
  if (y == 0) return absl::InvalidArgumentError("float division by zero");
  if (op == "/") return Value(x / y);
  if (op == "//") return Value(std::floor(x / y));
  if (op == "%") {
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return Value(m);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown operator ", op));
}

absl::StatusOr<Value> Ordering(const std::string& op, const Value& a, const Value& b) {
  int cmp;
  if (IsNumeric(a) && IsNumeric(b)) {
    double x = DoubleOf(a), y = DoubleOf(b);
    if (IsIntLike(a) && IsIntLike(b)) {
      cmp = IntOf(a) < IntOf(b) ? -1 : IntOf(a) > IntOf(b) ? 1 : 0;
    } else {
      if (std::isnan(x) || std::isnan(y)) return Value(false);
      cmp = x < y ? -1 : x > y ? 1 : 0;
    }
  } else if (a.is_string() && b.is_string()) {
    cmp = a.as_string().compare(b.as_string());  // UTF-8 byte order is code point order
  } else {
    return absl::InvalidArgumentError(absl::StrCat("'", op,
                                                   "' not supported between instances of '",
                                                   a.TypeName(), "' and '", b.TypeName(), "'"));
  }
  if (op == "<") return Value(cmp < 0);
  if (op == ">") return Value(cmp > 0);
  if (op == "<=") return Value(cmp <= 0);
  return Value(cmp >= 0);
}

}  // namespace

absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle) {
  if (haystack.is_string()) {
    if (!needle.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'in <string>' requires string as left operand, not ", needle.TypeName()));
    }
    return haystack.as_string().find(needle.as_string()) != std::string::npos;
  }
  if (haystack.is_dict() || haystack.is_namespace()) {
    return needle.is_string() && haystack.Find(needle.as_string()) != nullptr;
  }
  if (haystack.is_list()) {
    for (const Value& v : haystack.as_list()) {
      if (ValuesEqual(v, needle)) return true;
    }
    return false;
  }
  if (haystack.is_undefined()) return false;
  return absl::InvalidArgumentError(
      absl::StrCat("argument of type '", haystack.TypeName(), "' is not iterable"));
}

absl::StatusOr<ValueList> Iterate(const Value& value) {
  if (value.is_list()) return value.as_list();
  if (value.is_undefined()) return ValueList{};
  if (value.is_dict()) {
    ValueList keys;
    for (const auto& [k, v] : value.as_dict()) keys.emplace_back(k);
    return keys;
  }
  if (value.is_string()) {
    ValueList chars;
    const std::string& s = value.as_string();
    CodePoints cp = DecodeUtf8(s);
    for (size_t i = 0; i < cp.cps.size(); ++i) {
      chars.emplace_back(s.substr(cp.offsets[i], cp.offsets[i + 1] - cp.offsets[i]));
    }
    return chars;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", value.TypeName(), "' object is not iterable"));
}

absl::StatusOr<Value> BinaryOp(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") return Value(a.Str() + b.Str());
  if (op == "==") return Value(ValuesEqual(a, b));
  if (op == "!=") return Value(!ValuesEqual(a, b));
  if (op == "<" || op == ">" || op == "<=" || op == ">=") return Ordering(op, a, b);
  if (op == "in" || op == "not in") {
    auto in = Contains(b, a);
    if (!in.ok()) return in.status();
    return Value(op == "in" ? *in : !*in);
  }
  return Arithmetic(op, a, b);
}

absl::StatusOr<Value> UnaryOp(const std::string& op, const Value& a) {
  if (op == "not") return Value(!a.Truthy());
  if (a.is_bool() || a.is_int()) {
    int64_t x = IntOf(a);
    if (op == "+") return Value(x);
    if (x == INT64_MIN) return absl::OutOfRangeError("integer overflow");
    return Value(-x);
  }
  if (a.is_float()) return Value(op == "-" ? -a.as_double() : a.as_double());
  if (a.is_undefined()) {
    return absl::InvalidArgumentError(absl::StrCat("'", a.undefined_name(), "' is undefined"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad operand type for unary ", op, ": '", a.TypeName(), "'"));
}

}  // namespace kvfold::chat
