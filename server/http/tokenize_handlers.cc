#include "server/http/tokenize_handlers.h"

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/api/json_body.h"
#include "server/api/openai_request.h"
#include "server/http/generation_job.h"

namespace kvfold::http {
namespace {

using api::Json;

std::optional<api::ApiError> CheckModel(const Json& object, const serving::ServedModel& model) {
  std::optional<std::string> name;
  if (auto e = api::ReadString(object, "model", name)) return *e;
  if (name.has_value() && *name != model.name) return ModelNotFound(*name);
  return std::nullopt;
}

}  // namespace

api::ApiOr<std::string> TokenizeResponse(std::string_view body, const serving::ServedModel& model) {
  api::ApiOr<Json> object = api::ParseJsonObject(body);
  if (!object.ok()) return object.error();
  if (auto e = CheckModel(*object, model)) return *e;
  const bool has_prompt = api::FindField(*object, "prompt") != nullptr;
  const bool has_messages = api::FindField(*object, "messages") != nullptr;
  if (has_prompt == has_messages) {
    return api::InvalidRequest("give exactly one of 'prompt' and 'messages'");
  }
  std::optional<bool> add_special;
  if (auto e = api::ReadBool(*object, "add_special_tokens", add_special)) return *e;
  std::string text;
  if (has_prompt) {
    std::optional<std::string> prompt;
    if (auto e = api::ReadString(*object, "prompt", prompt)) return *e;
    text = *prompt;
  } else {
    if (model.chat == nullptr) {
      return api::InvalidRequest(
          "this model has no chat template; start the server with --chat-template FILE",
          "messages");
    }
    std::optional<bool> add_generation_prompt;
    if (auto e = api::ReadBool(*object, "add_generation_prompt", add_generation_prompt)) return *e;
    // The chat endpoint's reader checks the messages; it wants a model and nothing else matters.
    Json chat = Json::object();
    chat["model"] = model.name;
    chat["messages"] = (*object)["messages"];
    api::ApiOr<api::ChatRequest> parsed = api::ParseChatRequest(chat.dump());
    if (!parsed.ok()) return parsed.error();
    absl::StatusOr<std::string> rendered =
        model.chat->Render(parsed->messages, add_generation_prompt.value_or(true));
    if (!rendered.ok()) {
      return api::InvalidRequest(std::string(rendered.status().message()), "messages");
    }
    text = *std::move(rendered);
    if (!add_special.has_value()) add_special = false;  // the template wrote them
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      model.tokenizer->Encode(text, add_special.value_or(true));
  if (!ids.ok()) return api::InvalidRequest(std::string(ids.status().message()));
  Json out = {
      {"count", ids->size()}, {"max_model_len", model.engine->max_model_len()}, {"tokens", *ids}};
  return out.dump();
}

api::ApiOr<std::string> DetokenizeResponse(std::string_view body,
                                           const serving::ServedModel& model) {
  api::ApiOr<Json> object = api::ParseJsonObject(body);
  if (!object.ok()) return object.error();
  if (auto e = CheckModel(*object, model)) return *e;
  const Json* tokens = api::FindField(*object, "tokens");
  if (tokens == nullptr) return api::InvalidRequest("'tokens' is required", "tokens");
  if (!tokens->is_array()) return api::FieldError("tokens", "an array of token ids", *tokens);
  std::vector<int32_t> ids;
  const int32_t vocab = model.tokenizer->vocab_size();
  for (size_t i = 0; i < tokens->size(); ++i) {
    int64_t id = 0;
    if (!api::AsInt64((*tokens)[i], 0, vocab - 1, &id)) {
      return api::FieldError(absl::StrCat("tokens[", i, "]"),
                             absl::StrCat("a token id in [0, ", vocab, ")"), (*tokens)[i]);
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  absl::StatusOr<std::string> text = model.tokenizer->Decode(ids, false);
  if (!text.ok()) return api::InvalidRequest(std::string(text.status().message()), "tokens");
  // Text that ends mid-character (a byte-fallback token alone) would not serialize as JSON.
  return Json({{"prompt", *text}}).dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace kvfold::http
