// A Hugging Face chat template (Jinja), parsed once and rendered per request.
//
// No Debian package provides a C++ Jinja engine, so this folder holds a small interpreter for
// what the chat templates of Llama 2/3, Mistral, Qwen2/3 and SmolLM2 use, with output
// byte-identical to Python jinja2 configured as transformers' apply_chat_template does
// (trim_blocks, lstrip_blocks, raise_exception, strftime_now, tojson without HTML escaping).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvfold::chat {

struct Node;

class ChatTemplate {
 public:
  // Syntax errors come back as InvalidArgument with the line.
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source);

  // `context` holds the template's variables: messages, add_generation_prompt, bos_token,
  // eos_token, tools, ... Errors (undefined names, raise_exception) carry the line.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;
  absl::StatusOr<std::string> Render(const nlohmann::json& context) const;

 private:
  struct Tree;
  std::shared_ptr<const Tree> tree_;
};

}  // namespace kvfold::chat
