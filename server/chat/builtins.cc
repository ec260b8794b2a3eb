#include "server/chat/builtins.h"

#include <cmath>
#include <ctime>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/chat/operators.h"
#include "server/chat/py_string.h"

namespace kvfold::chat {
namespace {

constexpr int64_t kMaxRange = 1 << 20;

Value MakeFunction(Callable f) { return Value(std::make_shared<Callable>(std::move(f))); }

absl::Status TypeError(const std::string& what) { return absl::InvalidArgumentError(what); }

absl::StatusOr<std::string> StringArg(const CallArgs& args, size_t pos, const std::string& name,
                                      const std::string& fn) {
  const Value* v = args.Get(pos, name);
  if (v == nullptr || !v->is_string()) {
    return TypeError(absl::StrCat(fn, "() argument '", name, "' must be str"));
  }
  return v->as_string();
}

std::optional<std::string> OptionalString(const CallArgs& args, size_t pos,
                                          const std::string& name) {
  const Value* v = args.Get(pos, name);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return v->as_string();
}

int64_t IntArg(const CallArgs& args, size_t pos, const std::string& name, int64_t dflt) {
  const Value* v = args.Get(pos, name);
  if (v == nullptr) return dflt;
  if (v->is_int()) return v->as_int();
  if (v->is_bool()) return v->as_bool();
  return dflt;
}

absl::StatusOr<bool> PrefixTest(const std::string& s, const Value& arg, bool at_start) {
  auto match = [&](const std::string& p) {
    if (p.size() > s.size()) return false;
    return at_start ? s.compare(0, p.size(), p) == 0
                    : s.compare(s.size() - p.size(), p.size(), p) == 0;
  };
  if (arg.is_string()) return match(arg.as_string());
  if (arg.is_list()) {
    for (const Value& p : arg.as_list()) {
      if (!p.is_string()) return TypeError("startswith/endswith tuple items must be str");
      if (match(p.as_string())) return true;
    }
    return false;
  }
  return TypeError("startswith/endswith first arg must be str or a tuple of str");
}

absl::StatusOr<Value> StringMethod(const std::string& s, const std::string& name,
                                   const CallArgs& args) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    return Value(PyStrip(s, OptionalString(args, 0, "chars"), name != "rstrip", name != "lstrip"));
  }
  if (name == "split") {
    ValueList parts;
    std::optional<std::string> sep = OptionalString(args, 0, "sep");
    if (sep && sep->empty()) return absl::InvalidArgumentError("empty separator");
    for (auto& p : PySplit(s, sep, IntArg(args, 1, "maxsplit", -1)))
      parts.emplace_back(std::move(p));
    return Value(std::move(parts));
  }
  if (name == "startswith" || name == "endswith") {
    const Value* arg = args.Get(0, "prefix");
    if (arg == nullptr) return TypeError(absl::StrCat(name, "() takes at least 1 argument"));
    auto r = PrefixTest(s, *arg, name == "startswith");
    if (!r.ok()) return r.status();
    return Value(*r);
  }
  if (name == "upper") return Value(PyUpper(s));
  if (name == "lower") return Value(PyLower(s));
  if (name == "title") return Value(PyTitle(s));
  if (name == "capitalize") return Value(PyCapitalize(s));
  if (name == "replace") {
    auto old_s = StringArg(args, 0, "old", name);
    auto new_s = StringArg(args, 1, "new", name);
    if (!old_s.ok()) return old_s.status();
    if (!new_s.ok()) return new_s.status();
    return Value(PyReplace(s, *old_s, *new_s, IntArg(args, 2, "count", -1)));
  }
  if (name == "find") {
    auto sub = StringArg(args, 0, "sub", name);
    if (!sub.ok()) return sub.status();
    size_t hit = s.find(*sub);
    if (hit == std::string::npos) return Value(int64_t{-1});
    return Value(static_cast<int64_t>(CodePointCount(s.substr(0, hit))));
  }
  if (name == "join") {
    const Value* items = args.Get(0, "iterable");
    if (items == nullptr) return TypeError("join() takes exactly one argument");
    auto list = Iterate(*items);
    if (!list.ok()) return list.status();
    std::string out;
    for (size_t i = 0; i < list->size(); ++i) {
      if (!(*list)[i].is_string()) return TypeError("sequence item: expected str instance");
      if (i) out += s;
      out += (*list)[i].as_string();
    }
    return Value(std::move(out));
  }
  return TypeError(absl::StrCat("'str' object has no attribute '", name, "'"));
}

absl::StatusOr<Value> DictMethod(const Value& dict, const std::string& name, const CallArgs& args) {
  ValueList out;
  if (name == "items") {
    for (const auto& [k, v] : dict.as_dict()) out.emplace_back(ValueList{Value(k), v});
  } else if (name == "keys") {
    for (const auto& [k, v] : dict.as_dict()) out.emplace_back(k);
  } else if (name == "values") {
    for (const auto& [k, v] : dict.as_dict()) out.push_back(v);
  } else {  // get
    const Value* key = args.Get(0, "key");
    const Value* dflt = args.Get(1, "default");
    const Value* found = key && key->is_string() ? dict.Find(key->as_string()) : nullptr;
    if (found) return *found;
    return dflt ? *dflt : Value::MakeNone();
  }
  return Value(std::move(out));
}

bool IsStringMethod(const std::string& n) {
  for (const char* m : {"strip", "lstrip", "rstrip", "split", "startswith", "endswith", "upper",
                        "lower", "title", "capitalize", "replace", "find", "join"}) {
    if (n == m) return true;
  }
  return false;
}

std::string Describe(const Value& v) {
  if (v.is_dict()) return "'dict object'";
  if (v.is_list()) return "'list object'";
  if (v.is_string()) return "'str object'";
  return absl::StrCat("'", v.TypeName(), " object'");
}

absl::StatusOr<Value> Join(const Value& value, const CallArgs& args) {
  auto items = Iterate(value);
  if (!items.ok()) return items.status();
  std::string sep = OptionalString(args, 0, "d").value_or("");
  const Value* attribute = args.Get(1, "attribute");
  std::string out;
  for (size_t i = 0; i < items->size(); ++i) {
    if (i) out += sep;
    Value item = (*items)[i];
    if (attribute) item = GetItem(item, *attribute);
    out += item.Str();
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> Round(const Value& value, const CallArgs& args) {
  if (!value.is_number() && !value.is_bool()) return TypeError("round() needs a number");
  int64_t precision = IntArg(args, 0, "precision", 0);
  std::string method = OptionalString(args, 1, "method").value_or("common");
  double x = value.is_bool() ? double(value.as_bool()) : value.as_double();
  double scale = std::pow(10.0, static_cast<double>(precision));
  double scaled = x * scale;
  double r;
  if (method == "ceil") {
    r = std::ceil(scaled);
  } else if (method == "floor") {
    r = std::floor(scaled);
  } else if (method == "common") {
    r = std::nearbyint(scaled);  // Python's round(): halves to even
  } else {
    return absl::InvalidArgumentError("method must be common, ceil or floor");
  }
  return Value(r / scale);
}

absl::StatusOr<Value> SelectOrReject(const Value& value, const CallArgs& args, bool by_attribute,
                                     bool keep) {
  auto items = Iterate(value);
  if (!items.ok()) return items.status();
  size_t first_test_arg = by_attribute ? 1 : 0;
  const Value* attribute = by_attribute ? args.Get(0, "attribute") : nullptr;
  if (by_attribute && attribute == nullptr) return TypeError("selectattr needs an attribute");
  const Value* test =
      first_test_arg < args.positional.size() ? &args.positional[first_test_arg] : nullptr;
  CallArgs test_args;
  for (size_t i = first_test_arg + 1; i < args.positional.size(); ++i) {
    test_args.positional.push_back(args.positional[i]);
  }
  ValueList out;
  for (const Value& item : *items) {
    Value subject = attribute ? GetItem(item, *attribute) : item;
    bool pass;
    if (test == nullptr) {
      pass = subject.Truthy();
    } else {
      if (!test->is_string()) return TypeError("test name must be a string");
      auto r = ApplyTest(test->as_string(), subject, test_args);
      if (!r.ok()) return r.status();
      pass = *r;
    }
    if (pass == keep) out.push_back(item);
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> Map(const Value& value, const CallArgs& args) {
  auto items = Iterate(value);
  if (!items.ok()) return items.status();
  ValueList out;
  if (const Value* attribute = args.Get(99, "attribute")) {
    const Value* dflt = args.Get(99, "default");
    for (const Value& item : *items) {
      Value v = GetItem(item, *attribute);
      out.push_back(v.is_undefined() && dflt ? *dflt : v);
    }
    return Value(std::move(out));
  }
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return TypeError("map needs a filter name or attribute=");
  }
  CallArgs filter_args;
  filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
  for (const Value& item : *items) {
    auto v = ApplyFilter(args.positional[0].as_string(), item, filter_args);
    if (!v.ok()) return v.status();
    out.push_back(*v);
  }
  return Value(std::move(out));
}

std::string Indent(const std::string& s, const CallArgs& args) {
  std::string pad(static_cast<size_t>(std::clamp<int64_t>(IntArg(args, 0, "width", 4), 0, 1024)),
                  ' ');
  if (const Value* w = args.Get(0, "width"); w && w->is_string()) pad = w->as_string();
  const Value* first = args.Get(1, "first");
  const Value* blank = args.Get(2, "blank");
  std::vector<std::string> lines = PySplit(s, std::string("\n"), -1);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) out += '\n';
    bool indent =
        i == 0 ? (first && first->Truthy()) : (!lines[i].empty() || (blank && blank->Truthy()));
    if (indent) out += pad;
    out += lines[i];
  }
  return out;
}

}  // namespace

Value GetAttribute(const Value& object, const std::string& name) {
  if (object.is_dict() || object.is_namespace()) {
    if (const Value* v = object.Find(name)) return *v;
    if (object.is_dict() &&
        (name == "items" || name == "keys" || name == "values" || name == "get")) {
      Value dict = object;
      return MakeFunction([dict, name](CallArgs& args) { return DictMethod(dict, name, args); });
    }
  } else if (object.is_string() && IsStringMethod(name)) {
    std::string s = object.as_string();
    return MakeFunction([s, name](CallArgs& args) { return StringMethod(s, name, args); });
  }
  return Value::MakeUndefined(absl::StrCat(Describe(object), " has no attribute '", name, "'"));
}

Value GetItem(const Value& object, const Value& key) {
  if ((object.is_list() || object.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.is_bool() ? key.as_bool() : key.as_int();
    if (object.is_list()) {
      int64_t n = static_cast<int64_t>(object.as_list().size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return object.as_list()[static_cast<size_t>(i)];
    } else {
      CodePoints cp = DecodeUtf8(object.as_string());
      int64_t n = static_cast<int64_t>(cp.cps.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) {
        size_t b = cp.offsets[static_cast<size_t>(i)], e = cp.offsets[static_cast<size_t>(i) + 1];
        return Value(object.as_string().substr(b, e - b));
      }
    }
    return Value::MakeUndefined(absl::StrCat(Describe(object), " has no element ", i));
  }
  if (key.is_string()) {
    if (object.is_dict()) {
      if (const Value* v = object.Find(key.as_string())) return *v;
    }
    return GetAttribute(object, key.as_string());
  }
  return Value::MakeUndefined(absl::StrCat(Describe(object), " has no element ", key.Repr()));
}

absl::StatusOr<Value> Slice(const Value& object, std::optional<int64_t> start,
                            std::optional<int64_t> stop, std::optional<int64_t> step) {
  int64_t st = step.value_or(1);
  if (st == 0) return absl::InvalidArgumentError("slice step cannot be zero");
  if (object.is_list()) {
    ValueList out;
    for (int64_t i : SliceIndices(static_cast<int64_t>(object.as_list().size()), start, stop, st)) {
      out.push_back(object.as_list()[static_cast<size_t>(i)]);
    }
    return Value(std::move(out));
  }
  if (object.is_string()) {
    const std::string& s = object.as_string();
    CodePoints cp = DecodeUtf8(s);
    std::string out;
    for (int64_t i : SliceIndices(static_cast<int64_t>(cp.cps.size()), start, stop, st)) {
      size_t b = cp.offsets[static_cast<size_t>(i)], e = cp.offsets[static_cast<size_t>(i) + 1];
      out += s.substr(b, e - b);
    }
    return Value(std::move(out));
  }
  if (object.is_undefined()) {
    return absl::InvalidArgumentError(absl::StrCat("'", object.undefined_name(), "' is undefined"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", object.TypeName(), "' object is not subscriptable"));
}

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& value,
                                  const CallArgs& args) {
  auto need_string = [&]() -> absl::Status {
    if (value.is_undefined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", value.undefined_name(), "' is undefined"));
    }
    return absl::OkStatus();
  };
  if (name == "default" || name == "d") {
    const Value* dflt = args.Get(0, "default_value");
    const Value* boolean = args.Get(1, "boolean");
    bool use_default = value.is_undefined() || (boolean && boolean->Truthy() && !value.Truthy());
    if (use_default) return dflt ? *dflt : Value(std::string());
    return value;
  }
  if (name == "length" || name == "count") {
    if (value.is_string()) return Value(static_cast<int64_t>(CodePointCount(value.as_string())));
    if (value.is_list()) return Value(static_cast<int64_t>(value.as_list().size()));
    if (value.is_dict()) return Value(static_cast<int64_t>(value.as_dict().size()));
    if (value.is_undefined()) return Value(int64_t{0});
    return TypeError(absl::StrCat("object of type '", value.TypeName(), "' has no len()"));
  }
  if (name == "tojson") {
    int64_t indent = IntArg(args, 0, "indent", -1);
    auto json = ToJson(value, static_cast<int>(std::clamp<int64_t>(indent, -1, 64)));
    if (!json.ok()) return json.status();
    return Value(*json);
  }
  if (name == "string") return Value(value.Str());
  if (name == "safe") return value;
  if (name == "items") {
    if (value.is_undefined()) return Value(ValueList{});
    if (!value.is_dict()) return TypeError("items filter needs a mapping");
    return DictMethod(value, "items", args);
  }
  if (name == "list") {
    auto items = Iterate(value);
    if (!items.ok()) return items.status();
    return Value(*items);
  }
  if (name == "first" || name == "last") {
    auto items = Iterate(value);
    if (!items.ok()) return items.status();
    if (items->empty()) return Value::MakeUndefined("No first item, sequence was empty.");
    return name == "first" ? items->front() : items->back();
  }
  if (name == "join") return Join(value, args);
  if (name == "map") return Map(value, args);
  if (name == "select") return SelectOrReject(value, args, false, true);
  if (name == "reject") return SelectOrReject(value, args, false, false);
  if (name == "selectattr") return SelectOrReject(value, args, true, true);
  if (name == "rejectattr") return SelectOrReject(value, args, true, false);
  if (name == "reverse") {
    if (value.is_string()) return Slice(value, std::nullopt, std::nullopt, -1);
    auto items = Iterate(value);
    if (!items.ok()) return items.status();
    return Value(ValueList(items->rbegin(), items->rend()));
  }
  if (name == "round") return Round(value, args);
  if (name == "abs") {
    if (value.is_float()) return Value(std::fabs(value.as_double()));
    return UnaryOp(value.is_int() && value.as_int() < 0 ? "-" : "+", value);
  }
  if (name == "int") {
    if (value.is_int()) return value;
    if (value.is_bool()) return Value(int64_t{value.as_bool()});
    if (value.is_float() && std::isfinite(value.as_double()) &&
        std::fabs(value.as_double()) < 9e18) {
      return Value(static_cast<int64_t>(value.as_double()));
    }
    if (value.is_string()) {
      char* end = nullptr;
      std::string s = PyStrip(value.as_string(), std::nullopt, true, true);
      long long v = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && end && *end == '\0') return Value(static_cast<int64_t>(v));
    }
    return Value(IntArg(args, 0, "default", 0));
  }
  if (name == "float") {
    if (value.is_number() || value.is_bool())
      return Value(value.is_bool() ? double(value.as_bool()) : value.as_double());
    if (value.is_string()) {
      char* end = nullptr;
      std::string s = PyStrip(value.as_string(), std::nullopt, true, true);
      double v = std::strtod(s.c_str(), &end);
      if (!s.empty() && end && *end == '\0') return Value(v);
    }
    const Value* dflt = args.Get(0, "default");
    return dflt ? *dflt : Value(0.0);
  }
  // The string filters: jinja2 converts the value with str() first.
  if (name == "trim" || name == "upper" || name == "lower" || name == "capitalize" ||
      name == "title" || name == "replace" || name == "indent") {
    if (auto s = need_string(); !s.ok() && name != "trim") return s;
    std::string s = value.Str();
    if (name == "trim") return Value(PyStrip(s, OptionalString(args, 0, "chars"), true, true));
    if (name == "upper") return Value(PyUpper(s));
    if (name == "lower") return Value(PyLower(s));
    if (name == "capitalize") return Value(PyCapitalize(s));
    if (name == "title") return Value(PyTitle(s));
    if (name == "indent") return Value(Indent(s, args));
    return StringMethod(s, "replace", args);
  }
  return absl::InvalidArgumentError(absl::StrCat("no filter named '", name, "'"));
}

absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& value, const CallArgs& args) {
  const Value* arg = args.Get(0, "other");
  auto need_arg = [&]() -> absl::Status {
    if (arg == nullptr) return TypeError(absl::StrCat("test '", name, "' needs an argument"));
    return absl::OkStatus();
  };
  if (name == "defined") return !value.is_undefined();
  if (name == "undefined") return value.is_undefined();
  if (name == "none") return value.is_none();
  if (name == "boolean") return value.is_bool();
  if (name == "true") return value.is_bool() && value.as_bool();
  if (name == "false") return value.is_bool() && !value.as_bool();
  if (name == "integer") return value.is_int();
  if (name == "float") return value.is_float();
  if (name == "number") return value.is_number() || value.is_bool();
  if (name == "string") return value.is_string();
  if (name == "mapping") return value.is_dict();
  if (name == "iterable") return value.is_list() || value.is_dict() || value.is_string();
  if (name == "sequence") return value.is_list() || value.is_dict() || value.is_string();
  if (name == "callable") return value.is_callable();
  if (name == "lower") return value.is_string() && PyLower(value.as_string()) == value.as_string();
  if (name == "upper") return value.is_string() && PyUpper(value.as_string()) == value.as_string();
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!value.is_int() && !value.is_bool())
      return TypeError(absl::StrCat("test '", name, "' needs an integer"));
    int64_t x = value.is_bool() ? value.as_bool() : value.as_int();
    if (name == "odd") return x % 2 != 0;
    if (name == "even") return x % 2 == 0;
    if (auto s = need_arg(); !s.ok()) return s;
    if (!arg->is_int() || arg->as_int() == 0)
      return TypeError("divisibleby needs a nonzero integer");
    return x % arg->as_int() == 0;
  }
  static const std::pair<const char*, const char*> kComparisons[] = {
      {"eq", "=="}, {"equalto", "=="}, {"==", "=="},      {"ne", "!="},
      {"!=", "!="}, {"lt", "<"},       {"lessthan", "<"}, {"<", "<"},
      {"le", "<="}, {"<=", "<="},      {"gt", ">"},       {"greaterthan", ">"},
      {">", ">"},   {"ge", ">="},      {">=", ">="},      {"in", "in"}};
  for (const auto& [test, op] : kComparisons) {
    if (name == test) {
      if (auto s = need_arg(); !s.ok()) return s;
      auto r = BinaryOp(op, value, *arg);
      if (!r.ok()) return r.status();
      return r->Truthy();
    }
  }
  if (name == "sameas") {
    if (auto s = need_arg(); !s.ok()) return s;
    if (value.is_none() || value.is_bool())
      return ValuesEqual(value, *arg) && arg->TypeName() == value.TypeName();
    return false;
  }
  return absl::InvalidArgumentError(absl::StrCat("no test named '", name, "'"));
}

ValueDict Globals() {
  ValueDict g;
  g.emplace_back("raise_exception", MakeFunction([](CallArgs& args) -> absl::StatusOr<Value> {
                   const Value* msg = args.Get(0, "message");
                   return absl::InvalidArgumentError(msg ? msg->Str() : std::string());
                 }));
  g.emplace_back("namespace", MakeFunction([](CallArgs& args) -> absl::StatusOr<Value> {
                   auto ns = std::make_shared<Namespace>();
                   if (!args.positional.empty()) {
                     if (!args.positional[0].is_dict())
                       return TypeError("namespace() takes a mapping");
                     ns->attrs = args.positional[0].as_dict();
                   }
                   for (auto& [k, v] : args.keyword) ns->attrs.emplace_back(k, v);
                   return Value(ns);
                 }));
  g.emplace_back("dict", MakeFunction([](CallArgs& args) -> absl::StatusOr<Value> {
                   ValueDict d;
                   if (!args.positional.empty() && args.positional[0].is_dict())
                     d = args.positional[0].as_dict();
                   for (auto& [k, v] : args.keyword) d.emplace_back(k, v);
                   return Value(std::move(d));
                 }));
  g.emplace_back("range", MakeFunction([](CallArgs& args) -> absl::StatusOr<Value> {
                   std::vector<int64_t> n;
                   for (const Value& v : args.positional) {
                     if (!v.is_int()) return TypeError("range() arguments must be integers");
                     n.push_back(v.as_int());
                   }
                   if (n.empty() || n.size() > 3)
                     return TypeError("range expected 1 to 3 arguments");
                   int64_t start = n.size() > 1 ? n[0] : 0, stop = n.size() > 1 ? n[1] : n[0];
                   int64_t step = n.size() > 2 ? n[2] : 1;
                   if (step == 0)
                     return absl::InvalidArgumentError("range() arg 3 must not be zero");
                   ValueList out;
                   for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                     if (out.size() >= kMaxRange)
                       return absl::ResourceExhaustedError("range too large");
                     out.emplace_back(i);
                   }
                   return Value(std::move(out));
                 }));
  g.emplace_back("strftime_now", MakeFunction([](CallArgs& args) -> absl::StatusOr<Value> {
                   const Value* fmt = args.Get(0, "format");
                   if (fmt == nullptr || !fmt->is_string())
                     return TypeError("strftime_now needs a format string");
                   std::time_t now = std::time(nullptr);
                   std::tm local{};
                   localtime_r(&now, &local);
                   char buf[256];
                   size_t n = std::strftime(buf, sizeof(buf), fmt->as_string().c_str(), &local);
                   return Value(std::string(buf, n));
                 }));
  return g;
}

}  // namespace kvfold::chat
