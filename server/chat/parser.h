// Builds the syntax tree from tokens: jinja2's statement and expression grammar, the subset chat
// templates use.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "server/chat/ast.h"
#include "server/chat/lexer.h"

namespace kvfold::chat {

absl::StatusOr<Body> ParseTemplate(const std::vector<Token>& tokens);

}  // namespace kvfold::chat
