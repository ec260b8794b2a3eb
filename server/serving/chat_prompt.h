// A chat request's messages turned into prompt text by the model's own Jinja chat template, as
// transformers' apply_chat_template does (add_generation_prompt, bos_token, eos_token).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/api/openai_request.h"
#include "server/chat/chat_template.h"
#include "server/tokenizer/tokenizer.h"

namespace kvfold::serving {

class ChatPrompt {
 public:
  // The template is `override_file` when not empty (--chat-template), else the GGUF's
  // tokenizer.chat_template, else tokenizer_config.json's "chat_template" (a string, or a list of
  // {name, template} where "default" wins) in the model folder. NotFound when there is none;
  // InvalidArgument naming the source when it does not parse.
  static absl::StatusOr<ChatPrompt> ForModel(const std::string& model_path,
                                             const std::string& override_file,
                                             const Tokenizer& tokenizer);
  static absl::StatusOr<ChatPrompt> FromSource(const std::string& source, std::string bos_token,
                                               std::string eos_token);

  // The prompt text; it already holds the template's special tokens (BOS among them), so encode
  // it without adding more. InvalidArgument when the template refuses the conversation (its
  // raise_exception, e.g. roles that do not alternate).
  absl::StatusOr<std::string> Render(const std::vector<api::ChatMessage>& messages,
                                     bool add_generation_prompt = true) const;

  // Where the template came from: "--chat-template FILE", "GGUF metadata", "tokenizer_config.json".
  const std::string& origin() const { return origin_; }

 private:
  ChatPrompt(chat::ChatTemplate t, std::string bos, std::string eos)
      : template_(std::move(t)), bos_(std::move(bos)), eos_(std::move(eos)) {}

  chat::ChatTemplate template_;
  std::string bos_;
  std::string eos_;
  std::string origin_;
};

}  // namespace kvfold::serving
