// Runs a parsed template against a context: statements write to the output, expressions
// evaluate to values, variables live in nested scopes (each for loop and macro call has one).
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "server/chat/ast.h"
#include "server/chat/value.h"

namespace kvfold::chat {

class Interpreter {
 public:
  // `globals` are the context's variables plus the built-in functions.
  explicit Interpreter(ValueDict globals);

  absl::StatusOr<std::string> Render(const Body& body);

 private:
  using Scope = std::unordered_map<std::string, Value>;
  enum class Flow { kNormal, kBreak, kContinue };

  absl::Status Exec(const Body& body, std::string& out, Flow& flow);
  absl::Status ExecNode(const Node& node, std::string& out, Flow& flow);
  absl::Status ExecFor(const Node& node, std::string& out);
  absl::Status ExecSet(const Node& node, const Value& value);
  absl::StatusOr<Value> Eval(const Expr& expr);
  absl::StatusOr<Value> EvalInner(const Expr& expr);
  absl::StatusOr<Value> EvalCall(const Expr& expr);
  absl::StatusOr<CallArgs> EvalArgs(const Expr& expr);
  absl::StatusOr<Value> CallMacro(const Node& macro, CallArgs& args);

  Value Lookup(const std::string& name) const;
  void Assign(const std::string& name, Value value);

  std::vector<std::shared_ptr<Scope>> scopes_;  // innermost last; scopes_[0] holds the globals
  int call_depth_ = 0;
};

}  // namespace kvfold::chat
