#include "server/chat/parser.h"

#include <cstdlib>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/chat/value.h"
#include "worker/status_macros.h"

namespace kvfold::chat {
namespace {

// Deep nesting in a malformed template must fail cleanly, not overflow the stack.
constexpr int kMaxDepth = 100;

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : t_(tokens) {}

  absl::StatusOr<Body> Run() {
    Body body;
    std::string stopped_at;
    KVFOLD_RETURN_IF_ERROR(ParseBody({}, body, stopped_at));
    return body;
  }

 private:
  const Token& Peek(size_t ahead = 0) const {
    size_t i = std::min(i_ + ahead, t_.size() - 1);
    return t_[i];
  }
  const Token& Next() {
    const Token& tok = t_[i_];
    if (i_ + 1 < t_.size()) ++i_;
    return tok;
  }
  bool IsOp(const std::string& op, size_t ahead = 0) const {
    return Peek(ahead).type == Token::kOp && Peek(ahead).text == op;
  }
  bool IsName(const std::string& name, size_t ahead = 0) const {
    return Peek(ahead).type == Token::kName && Peek(ahead).text == name;
  }
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("template syntax error at line ", Peek().line, ": ", what));
  }
  static std::string Describe(const Token& tok) {
    switch (tok.type) {
      case Token::kEof:
        return "end of template";
      case Token::kBlockEnd:
        return "end of statement block";
      case Token::kVarEnd:
        return "end of print statement";
      case Token::kString:
        return "string";
      default:
        return "'" + tok.text + "'";
    }
  }
  absl::Status ExpectOp(const std::string& op) {
    if (!IsOp(op)) return Error(absl::StrCat("expected '", op, "', got ", Describe(Peek())));
    Next();
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().type != Token::kBlockEnd) {
      return Error(absl::StrCat("expected end of statement block, got ", Describe(Peek())));
    }
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().type != Token::kName)
      return Error(absl::StrCat("expected a name, got ", Describe(Peek())));
    return Next().text;
  }

  // Parses statements until a `{% name %}` with name in `stops` (left unconsumed after the
  // block begin; `stopped_at` says which) or, when `stops` is empty, the end of the template.
  absl::Status ParseBody(const std::set<std::string>& stops, Body& body, std::string& stopped_at) {
    if (++depth_ > kMaxDepth) return Error("blocks nested too deeply");
    while (true) {
      const Token& tok = Peek();
      if (tok.type == Token::kEof) {
        if (stops.empty()) break;
        return Error(absl::StrCat("unexpected end of template; expected one of: ",
                                  absl::StrJoin(stops, ", ")));
      }
      if (tok.type == Token::kText) {
        auto node = std::make_unique<Node>();
        node->kind = Node::kText;
        node->line = tok.line;
        node->text = tok.text;
        body.push_back(std::move(node));
        Next();
      } else if (tok.type == Token::kVarBegin) {
        Next();
        auto node = std::make_unique<Node>();
        node->kind = Node::kOutput;
        node->line = tok.line;
        KVFOLD_ASSIGN_OR_RETURN(node->expr, ParseExpression());
        if (Peek().type != Token::kVarEnd) {
          return Error(absl::StrCat("expected end of print statement, got ", Describe(Peek())));
        }
        Next();
        body.push_back(std::move(node));
      } else if (tok.type == Token::kBlockBegin) {
        Next();
        if (Peek().type == Token::kName && stops.count(Peek().text)) {
          stopped_at = Next().text;
          --depth_;
          return absl::OkStatus();
        }
        KVFOLD_ASSIGN_OR_RETURN(auto node, ParseStatement());
        body.push_back(std::move(node));
      } else {
        return Error(absl::StrCat("unexpected ", Describe(tok)));
      }
    }
    --depth_;
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseStatement() {
    const Token& tok = Peek();
    if (tok.type != Token::kName) return Error("expected a statement name");
    std::string keyword = tok.text;
    auto node = std::make_unique<Node>();
    node->line = tok.line;
    Next();
    std::string stopped;
    if (keyword == "if") {
      node->kind = Node::kIf;
      while (true) {
        KVFOLD_ASSIGN_OR_RETURN(auto cond, ParseExpression());
        KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
        node->conditions.push_back(std::move(cond));
        node->bodies.emplace_back();
        KVFOLD_RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"}, node->bodies.back(), stopped));
        if (stopped != "elif") break;
      }
      if (stopped == "else") {
        KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
        node->bodies.emplace_back();
        KVFOLD_RETURN_IF_ERROR(ParseBody({"endif"}, node->bodies.back(), stopped));
      }
      KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
    } else if (keyword == "for") {
      node->kind = Node::kFor;
      do {
        KVFOLD_ASSIGN_OR_RETURN(auto target, ExpectName());
        node->targets.push_back(target);
      } while (IsOp(",") && (Next(), true));
      if (!IsName("in")) return Error(absl::StrCat("expected 'in', got ", Describe(Peek())));
      Next();
      // The iterable is parsed without a bare ternary so `for x in y if cond` filters.
      KVFOLD_ASSIGN_OR_RETURN(node->expr, ParseOr());
      if (IsName("if")) {
        Next();
        KVFOLD_ASSIGN_OR_RETURN(node->filter, ParseExpression());
      }
      if (IsName("recursive")) return Error("recursive loops are not supported");
      KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
      KVFOLD_RETURN_IF_ERROR(ParseBody({"else", "endfor"}, node->body, stopped));
      if (stopped == "else") {
        KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
        KVFOLD_RETURN_IF_ERROR(ParseBody({"endfor"}, node->else_body, stopped));
      }
      KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
    } else if (keyword == "set") {
      KVFOLD_ASSIGN_OR_RETURN(auto target, ExpectName());
      node->targets.push_back(target);
      if (IsOp(".")) {
        Next();
        KVFOLD_ASSIGN_OR_RETURN(node->attribute, ExpectName());
      } else {
        while (IsOp(",")) {
          Next();
          KVFOLD_ASSIGN_OR_RETURN(auto more, ExpectName());
          node->targets.push_back(more);
        }
      }
      if (Peek().type == Token::kBlockEnd && node->attribute.empty() && node->targets.size() == 1) {
        node->kind = Node::kSetBlock;
        Next();
        KVFOLD_RETURN_IF_ERROR(ParseBody({"endset"}, node->body, stopped));
        KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
        return node;
      }
      node->kind = Node::kSet;
      KVFOLD_RETURN_IF_ERROR(ExpectOp("="));
      KVFOLD_ASSIGN_OR_RETURN(node->expr, ParseTuple());
      KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
    } else if (keyword == "macro") {
      node->kind = Node::kMacro;
      KVFOLD_ASSIGN_OR_RETURN(auto name, ExpectName());
      node->targets.push_back(name);
      KVFOLD_RETURN_IF_ERROR(ExpectOp("("));
      while (!IsOp(")")) {
        KVFOLD_ASSIGN_OR_RETURN(auto param, ExpectName());
        ExprPtr def;
        if (IsOp("=")) {
          Next();
          KVFOLD_ASSIGN_OR_RETURN(def, ParseExpression());
        }
        node->params.emplace_back(param, std::move(def));
        if (!IsOp(",")) break;
        Next();
      }
      KVFOLD_RETURN_IF_ERROR(ExpectOp(")"));
      KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
      KVFOLD_RETURN_IF_ERROR(ParseBody({"endmacro"}, node->body, stopped));
      KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
    } else if (keyword == "break" || keyword == "continue") {
      node->kind = keyword == "break" ? Node::kBreak : Node::kContinue;
      KVFOLD_RETURN_IF_ERROR(ExpectBlockEnd());
    } else {
      return absl::InvalidArgumentError(absl::StrCat("template syntax error at line ", tok.line,
                                                     ": unknown tag '", keyword, "'"));
    }
    return node;
  }

  ExprPtr Make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // `a, b` without brackets (in `set`), else a single expression.
  absl::StatusOr<ExprPtr> ParseTuple() {
    int line = Peek().line;
    KVFOLD_ASSIGN_OR_RETURN(auto first, ParseExpression());
    if (!IsOp(",")) return first;
    auto list = Make(Expr::kList, line);
    list->items.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      if (Peek().type == Token::kBlockEnd) break;
      KVFOLD_ASSIGN_OR_RETURN(auto item, ParseExpression());
      list->items.push_back(std::move(item));
    }
    return list;
  }

  absl::StatusOr<ExprPtr> ParseExpression() {
    if (++depth_ > kMaxDepth) return Error("expression nested too deeply");
    int line = Peek().line;
    KVFOLD_ASSIGN_OR_RETURN(auto expr, ParseOr());
    while (IsName("if")) {
      Next();
      auto cond = Make(Expr::kCondition, line);
      cond->left = std::move(expr);
      KVFOLD_ASSIGN_OR_RETURN(cond->cond, ParseOr());
      if (IsName("else")) {
        Next();
        KVFOLD_ASSIGN_OR_RETURN(cond->otherwise, ParseExpression());
      }
      expr = std::move(cond);
    }
    --depth_;
    return expr;
  }

  ExprPtr Binary(std::string op, ExprPtr l, ExprPtr r, int line) {
    auto e = Make(Expr::kBinary, line);
    e->name = std::move(op);
    e->left = std::move(l);
    e->right = std::move(r);
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    KVFOLD_ASSIGN_OR_RETURN(auto left, ParseAnd());
    while (IsName("or")) {
      int line = Next().line;
      KVFOLD_ASSIGN_OR_RETURN(auto right, ParseAnd());
      left = Binary("or", std::move(left), std::move(right), line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    KVFOLD_ASSIGN_OR_RETURN(auto left, ParseNot());
    while (IsName("and")) {
      int line = Next().line;
      KVFOLD_ASSIGN_OR_RETURN(auto right, ParseNot());
      left = Binary("and", std::move(left), std::move(right), line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      if (++depth_ > kMaxDepth) return Error("expression nested too deeply");
      int line = Next().line;
      auto e = Make(Expr::kUnary, line);
      e->name = "not";
      KVFOLD_ASSIGN_OR_RETURN(e->object, ParseNot());
      --depth_;
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    KVFOLD_ASSIGN_OR_RETURN(auto left, ParseMath1());
    while (true) {
      std::string op;
      const Token& tok = Peek();
      if (tok.type == Token::kOp && (tok.text == "==" || tok.text == "!=" || tok.text == "<" ||
                                     tok.text == ">" || tok.text == "<=" || tok.text == ">=")) {
        op = tok.text;
        Next();
      } else if (IsName("in")) {
        op = "in";
        Next();
      } else if (IsName("not") && IsName("in", 1)) {
        op = "not in";
        Next();
        Next();
      } else {
        break;
      }
      KVFOLD_ASSIGN_OR_RETURN(auto right, ParseMath1());
      left = Binary(op, std::move(left), std::move(right), tok.line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    KVFOLD_ASSIGN_OR_RETURN(auto left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const Token& tok = Next();
      KVFOLD_ASSIGN_OR_RETURN(auto right, ParseConcat());
      left = Binary(tok.text, std::move(left), std::move(right), tok.line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    KVFOLD_ASSIGN_OR_RETURN(auto left, ParseMath2());
    while (IsOp("~")) {
      const Token& tok = Next();
      KVFOLD_ASSIGN_OR_RETURN(auto right, ParseMath2());
      left = Binary("~", std::move(left), std::move(right), tok.line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    KVFOLD_ASSIGN_OR_RETURN(auto left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& tok = Next();
      KVFOLD_ASSIGN_OR_RETURN(auto right, ParsePow());
      left = Binary(tok.text, std::move(left), std::move(right), tok.line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    KVFOLD_ASSIGN_OR_RETURN(auto left, ParseUnary());
    while (IsOp("**")) {
      const Token& tok = Next();
      KVFOLD_ASSIGN_OR_RETURN(auto right, ParseUnary());
      left = Binary("**", std::move(left), std::move(right), tok.line);
    }
    return left;
  }

  // As in jinja2, filters bind to the whole unary expression: `-3 | abs` is `(-3) | abs`.
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filters = true) {
    if (++depth_ > kMaxDepth) return Error("expression nested too deeply");
    ExprPtr expr;
    if (IsOp("-") || IsOp("+")) {
      const Token& tok = Next();
      expr = Make(Expr::kUnary, tok.line);
      expr->name = tok.text;
      KVFOLD_ASSIGN_OR_RETURN(expr->object, ParseUnary(false));
    } else {
      KVFOLD_ASSIGN_OR_RETURN(expr, ParsePrimary());
      KVFOLD_ASSIGN_OR_RETURN(expr, ParsePostfix(std::move(expr)));
    }
    if (with_filters) {
      KVFOLD_ASSIGN_OR_RETURN(expr, ParseFiltersAndTests(std::move(expr)));
    }
    --depth_;
    return expr;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& tok = Peek();
    switch (tok.type) {
      case Token::kName: {
        Next();
        auto e = Make(Expr::kLiteral, tok.line);
        if (tok.text == "true" || tok.text == "True") {
          e->literal = Value(true);
        } else if (tok.text == "false" || tok.text == "False") {
          e->literal = Value(false);
        } else if (tok.text == "none" || tok.text == "None") {
          e->literal = Value::MakeNone();
        } else {
          e->kind = Expr::kName;
          e->name = tok.text;
        }
        return e;
      }
      case Token::kString: {
        std::string s;
        while (Peek().type == Token::kString) s += Next().text;  // adjacent literals join
        auto e = Make(Expr::kLiteral, tok.line);
        e->literal = Value(std::move(s));
        return e;
      }
      case Token::kInt: {
        Next();
        auto e = Make(Expr::kLiteral, tok.line);
        errno = 0;
        long long v = std::strtoll(tok.text.c_str(), nullptr, 10);
        if (errno == ERANGE) return Error("integer literal out of range");
        e->literal = Value(static_cast<int64_t>(v));
        return e;
      }
      case Token::kFloat: {
        Next();
        auto e = Make(Expr::kLiteral, tok.line);
        e->literal = Value(std::strtod(tok.text.c_str(), nullptr));
        return e;
      }
      case Token::kOp:
        if (tok.text == "(") {
          Next();
          if (IsOp(")")) {  // the empty tuple
            Next();
            return Make(Expr::kList, tok.line);
          }
          KVFOLD_ASSIGN_OR_RETURN(auto inner, ParseExpression());
          if (IsOp(",")) {
            auto list = Make(Expr::kList, tok.line);
            list->items.push_back(std::move(inner));
            while (IsOp(",")) {
              Next();
              if (IsOp(")")) break;
              KVFOLD_ASSIGN_OR_RETURN(auto item, ParseExpression());
              list->items.push_back(std::move(item));
            }
            inner = std::move(list);
          }
          KVFOLD_RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (tok.text == "[") {
          Next();
          auto list = Make(Expr::kList, tok.line);
          while (!IsOp("]")) {
            KVFOLD_ASSIGN_OR_RETURN(auto item, ParseExpression());
            list->items.push_back(std::move(item));
            if (!IsOp(",")) break;
            Next();
          }
          KVFOLD_RETURN_IF_ERROR(ExpectOp("]"));
          return list;
        }
        if (tok.text == "{") {
          Next();
          auto dict = Make(Expr::kDict, tok.line);
          while (!IsOp("}")) {
            KVFOLD_ASSIGN_OR_RETURN(auto key, ParseExpression());
            KVFOLD_RETURN_IF_ERROR(ExpectOp(":"));
            KVFOLD_ASSIGN_OR_RETURN(auto value, ParseExpression());
            dict->keys.push_back(std::move(key));
            dict->items.push_back(std::move(value));
            if (!IsOp(",")) break;
            Next();
          }
          KVFOLD_RETURN_IF_ERROR(ExpectOp("}"));
          return dict;
        }
        break;
      default:
        break;
    }
    return Error(absl::StrCat("unexpected ", Describe(tok)));
  }

  // `(args, name=value)` after a callee, filter or test.
  absl::Status ParseCallArgs(Expr& call) {
    KVFOLD_RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (Peek().type == Token::kName && IsOp("=", 1)) {
        std::string name = Next().text;
        Next();
        KVFOLD_ASSIGN_OR_RETURN(auto value, ParseExpression());
        call.kwargs.emplace_back(name, std::move(value));
      } else {
        if (!call.kwargs.empty()) return Error("positional argument follows keyword argument");
        KVFOLD_ASSIGN_OR_RETURN(auto value, ParseExpression());
        call.items.push_back(std::move(value));
      }
      if (!IsOp(",")) break;
      Next();
    }
    return ExpectOp(")");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr expr) {
    while (true) {
      const Token& tok = Peek();
      if (IsOp(".")) {
        Next();
        if (Peek().type != Token::kName && Peek().type != Token::kInt) {
          return Error("expected an attribute name after '.'");
        }
        auto e = Make(Expr::kGetAttr, tok.line);
        e->object = std::move(expr);
        e->name = Next().text;
        expr = std::move(e);
      } else if (IsOp("[")) {
        Next();
        ExprPtr parts[3];
        int colons = 0;
        for (int part = 0; part < 3; ++part) {
          if (!IsOp(":") && !IsOp("]")) {
            KVFOLD_ASSIGN_OR_RETURN(parts[part], ParseExpression());
          }
          if (part < 2 && IsOp(":")) {
            Next();
            ++colons;
          } else {
            break;
          }
        }
        KVFOLD_RETURN_IF_ERROR(ExpectOp("]"));
        if (colons == 0) {
          if (!parts[0]) return Error("expected a subscript");
          auto e = Make(Expr::kGetItem, tok.line);
          e->object = std::move(expr);
          e->left = std::move(parts[0]);
          expr = std::move(e);
        } else {
          auto e = Make(Expr::kSlice, tok.line);
          e->object = std::move(expr);
          e->start = std::move(parts[0]);
          e->stop = std::move(parts[1]);
          e->step = std::move(parts[2]);
          expr = std::move(e);
        }
      } else if (IsOp("(")) {
        auto e = Make(Expr::kCall, tok.line);
        e->object = std::move(expr);
        KVFOLD_RETURN_IF_ERROR(ParseCallArgs(*e));
        expr = std::move(e);
      } else {
        return expr;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFiltersAndTests(ExprPtr expr) {
    while (true) {
      if (IsOp("|")) {
        int line = Next().line;
        auto e = Make(Expr::kFilter, line);
        e->object = std::move(expr);
        KVFOLD_ASSIGN_OR_RETURN(e->name, ExpectName());
        if (IsOp("(")) KVFOLD_RETURN_IF_ERROR(ParseCallArgs(*e));
        expr = std::move(e);
      } else if (IsName("is")) {
        int line = Next().line;
        auto e = Make(Expr::kTest, line);
        e->object = std::move(expr);
        if (IsName("not")) {
          Next();
          e->negated = true;
        }
        // Test names may be keywords (`is none`, `is true`).
        KVFOLD_ASSIGN_OR_RETURN(e->name, ExpectName());
        if (IsOp("(")) {
          KVFOLD_RETURN_IF_ERROR(ParseCallArgs(*e));
        } else if (Peek().type == Token::kString || Peek().type == Token::kInt ||
                   Peek().type == Token::kFloat ||
                   (Peek().type == Token::kName && !IsName("else") && !IsName("or") &&
                    !IsName("and") && !IsName("if") && !IsName("in") && !IsName("is") &&
                    !IsName("not"))) {
          // `is divisibleby 3`, `is sameas x`: one argument without parentheses.
          KVFOLD_ASSIGN_OR_RETURN(auto arg, ParsePrimary());
          KVFOLD_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
          e->items.push_back(std::move(arg));
        }
        expr = std::move(e);
      } else {
        return expr;
      }
    }
  }

  const std::vector<Token>& t_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<Body> ParseTemplate(const std::vector<Token>& tokens) {
  return Parser(tokens).Run();
}

}  // namespace kvfold::chat
