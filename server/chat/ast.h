// The syntax tree of a parsed template: expressions and statements.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/chat/value.h"

namespace kvfold::chat {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum Kind {
    kLiteral,    // literal
    kName,       // name
    kList,       // items (tuples too)
    kDict,       // keys and items, pairwise
    kGetAttr,    // object.name
    kGetItem,    // object[index]
    kSlice,      // object[start:stop:step]; absent parts are nullptr
    kCall,       // object(args, kwargs)
    kFilter,     // object | name(args, kwargs)
    kTest,       // object is [not] name(args)
    kUnary,      // op object: "-", "+", "not"
    kBinary,     // left op right: arithmetic, comparison, "and", "or", "in", "not in", "~"
    kCondition,  // then if cond else otherwise
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;  // name, attribute, filter/test name, or operator
  bool negated = false;
  ExprPtr object, left, right, cond, otherwise;
  ExprPtr start, stop, step;
  std::vector<ExprPtr> items;  // list items, dict values, call positional args
  std::vector<ExprPtr> keys;   // dict keys
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue };
  Kind kind;
  int line = 0;
  std::string text;  // kText
  ExprPtr expr;      // kOutput, kFor's iterable, kSet's value
  // kIf: conditions[i] guards bodies[i]; a trailing extra body is the else branch.
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  // kFor: loop targets, optional filter, body and else body. kSet: targets (one name, or a
  // namespace and attribute when `attribute` is set). kMacro: name in targets[0], parameters.
  std::vector<std::string> targets;
  std::string attribute;
  ExprPtr filter;
  Body body, else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // kMacro: name, default or nullptr
};

}  // namespace kvfold::chat
