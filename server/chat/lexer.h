// Splits a Jinja template into tokens, applying jinja2's whitespace control the way Hugging Face
// configures it (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False) plus the `-`
// and `+` markers on tags.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvfold::chat {

struct Token {
  enum Type {
    kText,
    kVarBegin,
    kVarEnd,
    kBlockBegin,
    kBlockEnd,
    kName,
    kString,
    kInt,
    kFloat,
    kOp,
    kEof
  };
  Type type;
  std::string text;  // literal text, name, operator, or the unescaped string literal
  int line;
};

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source);

}  // namespace kvfold::chat
