// The values a chat template computes with, modelled on the Python objects jinja2 sees: None,
// bool, int, float, str (UTF-8), list, dict (insertion-ordered), plus jinja's Undefined, a
// namespace() object, and callables (macros, globals such as raise_exception).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvfold::chat {

class Value;
using ValueList = std::vector<Value>;
// Python dicts keep insertion order; templates (tojson, items) depend on it.
using ValueDict = std::vector<std::pair<std::string, Value>>;

struct CallArgs;
using Callable = std::function<absl::StatusOr<Value>(CallArgs&)>;

// namespace() is the one mutable object templates use: `{% set ns.x = ... %}`.
struct Namespace {
  ValueDict attrs;
};

class Value {
 public:
  struct Undefined {
    std::string name;  // what was looked up, for the error when it is used
  };
  struct None {};

  Value() : v_(Undefined{}) {}
  static Value MakeUndefined(std::string name) {
    Value v;
    v.v_ = Undefined{std::move(name)};
    return v;
  }
  static Value MakeNone() {
    Value v;
    v.v_ = None{};
    return v;
  }
  Value(bool b) : v_(b) {}
  Value(int64_t i) : v_(i) {}
  Value(int i) : v_(int64_t{i}) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(ValueList l) : v_(std::make_shared<ValueList>(std::move(l))) {}
  Value(ValueDict d) : v_(std::make_shared<ValueDict>(std::move(d))) {}
  Value(std::shared_ptr<Namespace> ns) : v_(std::move(ns)) {}
  Value(std::shared_ptr<Callable> f) : v_(std::move(f)) {}

  static Value FromJson(const nlohmann::ordered_json& j);

  bool is_undefined() const { return std::holds_alternative<Undefined>(v_); }
  bool is_none() const { return std::holds_alternative<None>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_number() const { return is_int() || is_float(); }  // bools are not, for templates
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<ValueList>>(v_); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<ValueDict>>(v_); }
  bool is_namespace() const { return std::holds_alternative<std::shared_ptr<Namespace>>(v_); }
  bool is_callable() const { return std::holds_alternative<std::shared_ptr<Callable>>(v_); }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_double() const { return is_int() ? double(as_int()) : std::get<double>(v_); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const ValueList& as_list() const { return *std::get<std::shared_ptr<ValueList>>(v_); }
  const ValueDict& as_dict() const { return *std::get<std::shared_ptr<ValueDict>>(v_); }
  Namespace& as_namespace() const { return *std::get<std::shared_ptr<Namespace>>(v_); }
  const Callable& as_callable() const { return *std::get<std::shared_ptr<Callable>>(v_); }
  const std::string& undefined_name() const { return std::get<Undefined>(v_).name; }

  // Python truthiness.
  bool Truthy() const;
  // Python str(): what `{{ value }}` writes (Undefined writes nothing).
  std::string Str() const;
  // Python repr(), used inside str() of lists and dicts.
  std::string Repr() const;
  // A dict's entry or a namespace attribute; nullptr when absent.
  const Value* Find(const std::string& key) const;
  // Python's type name, for error messages.
  std::string TypeName() const;

 private:
  std::variant<Undefined, None, bool, int64_t, double, std::string, std::shared_ptr<ValueList>,
               std::shared_ptr<ValueDict>, std::shared_ptr<Namespace>, std::shared_ptr<Callable>>
      v_;
};

// Python ==.
bool ValuesEqual(const Value& a, const Value& b);

// json.dumps(value, ensure_ascii=False, indent=indent) as transformers' tojson filter does it:
// ", " and ": " separators without indent, "," and ": " with it.
absl::StatusOr<std::string> ToJson(const Value& value, int indent = -1);

// Python's repr of a float: the shortest text that reads back the same value.
std::string FloatRepr(double d);

// Arguments of a call: positional then keyword, in source order.
struct CallArgs {
  ValueList positional;
  std::vector<std::pair<std::string, Value>> keyword;
  int line = 0;

  // The argument named `name` or at position `pos`, or nullptr.
  const Value* Get(size_t pos, const std::string& name) const;
};

}  // namespace kvfold::chat
