#include "server/chat/interpreter.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/chat/builtins.h"
#include "server/chat/operators.h"
#include "worker/status_macros.h"

namespace kvfold::chat {
namespace {

// Macro recursion and output growth are bounded so a hostile template fails instead of
// exhausting the stack or memory.
constexpr int kMaxCallDepth = 64;
constexpr size_t kMaxOutputBytes = size_t{64} << 20;

absl::Status AtLine(const absl::Status& status, int line) {
  if (status.ok() || absl::StartsWith(status.message(), "template ")) return status;
  return absl::Status(status.code(),
                      absl::StrCat("template error at line ", line, ": ", status.message()));
}

absl::Status UndefinedError(const Value& v) {
  return absl::InvalidArgumentError(absl::StrCat("'", v.undefined_name(), "' is undefined"));
}

absl::StatusOr<std::optional<int64_t>> SliceBound(const Value& v) {
  if (v.is_none() || v.is_undefined()) return std::optional<int64_t>();
  if (v.is_int()) return std::optional<int64_t>(v.as_int());
  if (v.is_bool()) return std::optional<int64_t>(v.as_bool());
  return absl::InvalidArgumentError("slice indices must be integers or None");
}

}  // namespace

Interpreter::Interpreter(ValueDict globals) {
  auto root = std::make_shared<Scope>();
  for (auto& [k, v] : globals) (*root)[k] = std::move(v);
  scopes_.push_back(std::move(root));
}

absl::StatusOr<std::string> Interpreter::Render(const Body& body) {
  std::string out;
  Flow flow = Flow::kNormal;
  KVFOLD_RETURN_IF_ERROR(Exec(body, out, flow));
  return out;
}

Value Interpreter::Lookup(const std::string& name) const {
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
    auto found = (*it)->find(name);
    if (found != (*it)->end()) return found->second;
  }
  return Value::MakeUndefined(name);
}

void Interpreter::Assign(const std::string& name, Value value) {
  (*scopes_.back())[name] = std::move(value);
}

absl::Status Interpreter::Exec(const Body& body, std::string& out, Flow& flow) {
  for (const auto& node : body) {
    KVFOLD_RETURN_IF_ERROR(ExecNode(*node, out, flow));
    if (out.size() > kMaxOutputBytes) {
      return AtLine(absl::ResourceExhaustedError("output too large"), node->line);
    }
    if (flow != Flow::kNormal) break;
  }
  return absl::OkStatus();
}

absl::Status Interpreter::ExecNode(const Node& node, std::string& out, Flow& flow) {
  switch (node.kind) {
    case Node::kText:
      out += node.text;
      return absl::OkStatus();
    case Node::kOutput: {
      KVFOLD_ASSIGN_OR_RETURN(Value v, Eval(*node.expr));
      out += v.Str();
      return absl::OkStatus();
    }
    case Node::kIf:
      for (size_t i = 0; i < node.bodies.size(); ++i) {
        bool take = i >= node.conditions.size();
        if (!take) {
          KVFOLD_ASSIGN_OR_RETURN(Value cond, Eval(*node.conditions[i]));
          take = cond.Truthy();
        }
        if (take) return Exec(node.bodies[i], out, flow);
      }
      return absl::OkStatus();
    case Node::kFor:
      return ExecFor(node, out);
    case Node::kSet: {
      KVFOLD_ASSIGN_OR_RETURN(Value v, Eval(*node.expr));
      return AtLine(ExecSet(node, v), node.line);
    }
    case Node::kSetBlock: {
      std::string captured;
      Flow inner = Flow::kNormal;
      KVFOLD_RETURN_IF_ERROR(Exec(node.body, captured, inner));
      Assign(node.targets[0], Value(std::move(captured)));
      return absl::OkStatus();
    }
    case Node::kMacro: {
      const Node* macro = &node;
      Assign(node.targets[0], Value(std::make_shared<Callable>([this, macro](CallArgs& args) {
               return CallMacro(*macro, args);
             })));
      return absl::OkStatus();
    }
    case Node::kBreak:
      flow = Flow::kBreak;
      return absl::OkStatus();
    case Node::kContinue:
      flow = Flow::kContinue;
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Interpreter::ExecSet(const Node& node, const Value& value) {
  if (!node.attribute.empty()) {
    Value target = Lookup(node.targets[0]);
    if (!target.is_namespace()) {
      return absl::InvalidArgumentError("cannot assign attribute on non-namespace object");
    }
    for (auto& [k, v] : target.as_namespace().attrs) {
      if (k == node.attribute) {
        v = value;
        return absl::OkStatus();
      }
    }
    target.as_namespace().attrs.emplace_back(node.attribute, value);
    return absl::OkStatus();
  }
  if (node.targets.size() == 1) {
    Assign(node.targets[0], value);
    return absl::OkStatus();
  }
  KVFOLD_ASSIGN_OR_RETURN(ValueList items, Iterate(value));
  if (items.size() != node.targets.size()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot unpack ", items.size(), " values into ",
                                                   node.targets.size(), " names"));
  }
  for (size_t i = 0; i < items.size(); ++i) Assign(node.targets[i], items[i]);
  return absl::OkStatus();
}

absl::Status Interpreter::ExecFor(const Node& node, std::string& out) {
  KVFOLD_ASSIGN_OR_RETURN(Value iterable, Eval(*node.expr));
  if (iterable.is_none()) {
    return AtLine(absl::InvalidArgumentError("'NoneType' object is not iterable"), node.line);
  }
  auto listed = Iterate(iterable);
  if (!listed.ok()) return AtLine(listed.status(), node.line);

  scopes_.push_back(std::make_shared<Scope>());
  struct PopScope {
    std::vector<std::shared_ptr<Scope>>& s;
    ~PopScope() { s.pop_back(); }
  } pop{scopes_};

  auto bind = [&](const Value& item) -> absl::Status {
    if (node.targets.size() == 1) {
      Assign(node.targets[0], item);
      return absl::OkStatus();
    }
    auto parts = Iterate(item);
    if (!parts.ok() || parts->size() != node.targets.size()) {
      return AtLine(absl::InvalidArgumentError(absl::StrCat("cannot unpack loop item into ",
                                                            node.targets.size(), " names")),
                    node.line);
    }
    for (size_t i = 0; i < parts->size(); ++i) Assign(node.targets[i], (*parts)[i]);
    return absl::OkStatus();
  };

  ValueList items;
  for (const Value& item : *listed) {
    if (node.filter) {
      KVFOLD_RETURN_IF_ERROR(bind(item));
      KVFOLD_ASSIGN_OR_RETURN(Value keep, Eval(*node.filter));
      if (!keep.Truthy()) continue;
    }
    items.push_back(item);
  }

  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    KVFOLD_RETURN_IF_ERROR(bind(items[static_cast<size_t>(i)]));
    ValueDict loop = {
        {"index0", Value(i)},
        {"index", Value(i + 1)},
        {"revindex0", Value(n - i - 1)},
        {"revindex", Value(n - i)},
        {"first", Value(i == 0)},
        {"last", Value(i == n - 1)},
        {"length", Value(n)},
        {"previtem",
         i > 0 ? items[static_cast<size_t>(i - 1)] : Value::MakeUndefined("loop.previtem")},
        {"nextitem",
         i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value::MakeUndefined("loop.nextitem")},
        {"cycle", Value(std::make_shared<Callable>([i](CallArgs& args) -> absl::StatusOr<Value> {
           if (args.positional.empty())
             return absl::InvalidArgumentError("no items for cycling given");
           return args.positional[static_cast<size_t>(i) % args.positional.size()];
         }))},
    };
    Assign("loop", Value(std::move(loop)));
    Flow flow = Flow::kNormal;
    KVFOLD_RETURN_IF_ERROR(Exec(node.body, out, flow));
    if (flow == Flow::kBreak) break;
  }
  if (n == 0) {
    Flow flow = Flow::kNormal;
    KVFOLD_RETURN_IF_ERROR(Exec(node.else_body, out, flow));
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Interpreter::CallMacro(const Node& macro, CallArgs& args) {
  if (call_depth_ >= kMaxCallDepth) {
    return absl::ResourceExhaustedError("macro calls nested too deeply");
  }
  if (args.positional.size() > macro.params.size()) {
    return absl::InvalidArgumentError(absl::StrCat("macro '", macro.targets[0],
                                                   "' takes not more than ", macro.params.size(),
                                                   " argument(s)"));
  }
  auto frame = std::make_shared<Scope>();
  // Parameters see the template's globals and earlier parameters, as in jinja2.
  std::vector<std::shared_ptr<Scope>> saved = {scopes_.front(), frame};
  std::swap(saved, scopes_);
  ++call_depth_;
  absl::Status status;
  for (size_t i = 0; i < macro.params.size() && status.ok(); ++i) {
    const auto& [param, dflt] = macro.params[i];
    const Value* given = args.Get(i, param);
    if (given) {
      (*frame)[param] = *given;
    } else if (dflt) {
      auto v = Eval(*dflt);
      if (v.ok()) (*frame)[param] = *v;
      status = v.status();
    } else {
      (*frame)[param] = Value::MakeUndefined(param);
    }
  }
  std::string out;
  if (status.ok()) {
    Flow flow = Flow::kNormal;
    status = Exec(macro.body, out, flow);
  }
  --call_depth_;
  std::swap(saved, scopes_);
  if (!status.ok()) return status;
  return Value(std::move(out));
}

absl::StatusOr<Value> Interpreter::Eval(const Expr& expr) {
  auto v = EvalInner(expr);
  if (!v.ok()) return AtLine(v.status(), expr.line);
  return v;
}

absl::StatusOr<CallArgs> Interpreter::EvalArgs(const Expr& expr) {
  CallArgs args;
  args.line = expr.line;
  for (const auto& item : expr.items) {
    KVFOLD_ASSIGN_OR_RETURN(Value v, Eval(*item));
    args.positional.push_back(std::move(v));
  }
  for (const auto& [name, item] : expr.kwargs) {
    KVFOLD_ASSIGN_OR_RETURN(Value v, Eval(*item));
    args.keyword.emplace_back(name, std::move(v));
  }
  return args;
}

absl::StatusOr<Value> Interpreter::EvalCall(const Expr& expr) {
  KVFOLD_ASSIGN_OR_RETURN(Value callee, Eval(*expr.object));
  if (callee.is_undefined()) return UndefinedError(callee);
  if (!callee.is_callable()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", callee.TypeName(), "' object is not callable"));
  }
  KVFOLD_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr));
  return callee.as_callable()(args);
}

absl::StatusOr<Value> Interpreter::EvalInner(const Expr& expr) {
  switch (expr.kind) {
    case Expr::kLiteral:
      return expr.literal;
    case Expr::kName:
      return Lookup(expr.name);
    case Expr::kList: {
      ValueList items;
      for (const auto& item : expr.items) {
        KVFOLD_ASSIGN_OR_RETURN(Value v, Eval(*item));
        items.push_back(std::move(v));
      }
      return Value(std::move(items));
    }
    case Expr::kDict: {
      ValueDict dict;
      for (size_t i = 0; i < expr.keys.size(); ++i) {
        KVFOLD_ASSIGN_OR_RETURN(Value k, Eval(*expr.keys[i]));
        KVFOLD_ASSIGN_OR_RETURN(Value v, Eval(*expr.items[i]));
        if (!k.is_string()) return absl::InvalidArgumentError("dict keys must be strings");
        bool replaced = false;
        for (auto& [key, value] : dict) {
          if (key == k.as_string()) {
            value = v;
            replaced = true;
          }
        }
        if (!replaced) dict.emplace_back(k.as_string(), std::move(v));
      }
      return Value(std::move(dict));
    }
    case Expr::kGetAttr: {
      KVFOLD_ASSIGN_OR_RETURN(Value obj, Eval(*expr.object));
      if (obj.is_undefined()) return UndefinedError(obj);
      return GetAttribute(obj, expr.name);
    }
    case Expr::kGetItem: {
      KVFOLD_ASSIGN_OR_RETURN(Value obj, Eval(*expr.object));
      if (obj.is_undefined()) return UndefinedError(obj);
      KVFOLD_ASSIGN_OR_RETURN(Value key, Eval(*expr.left));
      return GetItem(obj, key);
    }
    case Expr::kSlice: {
      KVFOLD_ASSIGN_OR_RETURN(Value obj, Eval(*expr.object));
      std::optional<int64_t> bounds[3];
      const ExprPtr* parts[3] = {&expr.start, &expr.stop, &expr.step};
      for (int i = 0; i < 3; ++i) {
        if (!*parts[i]) continue;
        KVFOLD_ASSIGN_OR_RETURN(Value v, Eval(**parts[i]));
        KVFOLD_ASSIGN_OR_RETURN(bounds[i], SliceBound(v));
      }
      return Slice(obj, bounds[0], bounds[1], bounds[2]);
    }
    case Expr::kCall:
      return EvalCall(expr);
    case Expr::kFilter: {
      KVFOLD_ASSIGN_OR_RETURN(Value obj, Eval(*expr.object));
      KVFOLD_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr));
      return ApplyFilter(expr.name, obj, args);
    }
    case Expr::kTest: {
      KVFOLD_ASSIGN_OR_RETURN(Value obj, Eval(*expr.object));
      KVFOLD_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr));
      KVFOLD_ASSIGN_OR_RETURN(bool result, ApplyTest(expr.name, obj, args));
      return Value(result != expr.negated);
    }
    case Expr::kUnary: {
      KVFOLD_ASSIGN_OR_RETURN(Value v, Eval(*expr.object));
      return UnaryOp(expr.name, v);
    }
    case Expr::kBinary: {
      KVFOLD_ASSIGN_OR_RETURN(Value left, Eval(*expr.left));
      if (expr.name == "and") return left.Truthy() ? Eval(*expr.right) : left;
      if (expr.name == "or") return left.Truthy() ? left : Eval(*expr.right);
      KVFOLD_ASSIGN_OR_RETURN(Value right, Eval(*expr.right));
      return BinaryOp(expr.name, left, right);
    }
    case Expr::kCondition: {
      KVFOLD_ASSIGN_OR_RETURN(Value cond, Eval(*expr.cond));
      if (cond.Truthy()) return Eval(*expr.left);
      if (expr.otherwise) return Eval(*expr.otherwise);
      return Value::MakeUndefined("the inline if-expression's else branch");
    }
  }
  return absl::InternalError("unknown expression");
}

}  // namespace kvfold::chat
