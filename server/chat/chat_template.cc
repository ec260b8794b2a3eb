#include "server/chat/chat_template.h"

#include "absl/status/status.h"
#include "server/chat/ast.h"
#include "server/chat/builtins.h"
#include "server/chat/interpreter.h"
#include "server/chat/lexer.h"
#include "server/chat/parser.h"
#include "worker/status_macros.h"

namespace kvfold::chat {

struct ChatTemplate::Tree {
  Body body;
};

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source) {
  KVFOLD_ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source));
  KVFOLD_ASSIGN_OR_RETURN(Body body, ParseTemplate(tokens));
  auto tree = std::make_shared<Tree>();
  tree->body = std::move(body);
  ChatTemplate t;
  t.tree_ = std::move(tree);
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context) const {
  if (!context.is_object())
    return absl::InvalidArgumentError("chat template context must be an object");
  ValueDict globals = Globals();
  for (const auto& [k, v] : context.items()) globals.emplace_back(k, Value::FromJson(v));
  return Interpreter(std::move(globals)).Render(tree_->body);
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context) const {
  return Render(nlohmann::ordered_json::parse(context.dump()));
}

}  // namespace kvfold::chat
