#include "server/api/openai_request.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "server/api/json_body.h"

namespace kvfold::api {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

constexpr std::string_view kCommonFieldNames[] = {"model",
                                                  "n",
                                                  "user",
                                                  "stream",
                                                  "stream_options",
                                                  "prompt_logprobs",
                                                  "max_tokens",
                                                  "temperature",
                                                  "seed",
                                                  "stop",
                                                  "top_k",
                                                  "top_p",
                                                  "min_p",
                                                  "repetition_penalty",
                                                  "frequency_penalty",
                                                  "presence_penalty",
                                                  "logit_bias",
                                                  "stop_token_ids",
                                                  "ignore_eos"};
constexpr std::string_view kCompletionFieldNames[] = {"prompt", "echo", "logprobs"};
constexpr std::string_view kChatFieldNames[] = {"messages", "max_completion_tokens", "logprobs",
                                                "top_logprobs"};

ApiError Missing(std::string_view param) {
  return InvalidRequest(
      absl::StrCat("'", absl::string_view(param.data(), param.size()), "' is required"),
      std::string(param));
}

std::vector<std::string> UnknownFields(const Json& j, absl::Span<const std::string_view> own) {
  std::vector<std::string> unknown;
  for (const auto& [key, value] : j.items()) {
    auto known = [&key](absl::Span<const std::string_view> names) {
      return std::find(names.begin(), names.end(), key) != names.end();
    };
    if (!known(kCommonFieldNames) && !known(own)) unknown.push_back(key);
  }
  return unknown;  // nlohmann::json objects iterate in key order: already sorted
}

MaybeError ReadCommon(const Json& j, const RequestLimits& limits, CommonFields& out) {
  const Json* model = FindField(j, "model");
  if (model == nullptr) return Missing("model");
  if (!model->is_string() || model->get_ref<const std::string&>().empty()) {
    return FieldError("model", "a non-empty string", *model);
  }
  out.model = model->get<std::string>();
  std::optional<int32_t> n;
  if (auto e = ReadInt32(j, "n", 1, limits.max_n,
                         absl::StrCat("an integer in [1, ", limits.max_n, "]"), n)) {
    return e;
  }
  out.n = n.value_or(1);
  if (auto e = ReadString(j, "user", out.user)) return e;
  std::optional<bool> stream;
  if (auto e = ReadBool(j, "stream", stream)) return e;
  out.stream = stream.value_or(false);
  if (const Json* options = FindField(j, "stream_options")) {
    if (!options->is_object()) return FieldError("stream_options", "an object", *options);
    if (!out.stream) {
      return InvalidRequest("'stream_options' is only allowed when 'stream' is true",
                            "stream_options");
    }
    std::optional<bool> include_usage;
    if (const Json* v = FindField(*options, "include_usage"); v != nullptr && !v->is_boolean()) {
      return FieldError("stream_options.include_usage", "true or false", *v);
    }
    if (auto e = ReadBool(*options, "include_usage", include_usage)) return e;
    out.include_usage = include_usage.value_or(false);
  }
  if (auto e = ReadInt32(j, "prompt_logprobs", 0, limits.max_logprobs,
                         absl::StrCat("an integer in [0, ", limits.max_logprobs, "]"),
                         out.prompt_logprobs)) {
    return e;
  }
  return ReadSamplingFields(j, out.sampling);
}

// A list of token ids at `param`; empty lists are refused.
MaybeError ReadTokenIds(const Json& list, const std::string& param, std::vector<int32_t>& out) {
  if (list.empty()) return InvalidRequest(absl::StrCat("'", param, "' must not be empty"), param);
  out.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    int64_t id = 0;
    if (!AsInt64(list[i], 0, kInt32Max, &id)) {
      return FieldError(absl::StrCat(param, "[", i, "]"), "a token id (integer >= 0)", list[i]);
    }
    out.push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

MaybeError ReadPrompts(const Json& j, std::vector<Prompt>& out) {
  const Json* v = FindField(j, "prompt");
  if (v == nullptr) return Missing("prompt");
  constexpr std::string_view kWant =
      "a string, an array of strings, an array of token ids, or an array of token-id arrays";
  if (v->is_string()) {
    out.push_back(Prompt{.text = v->get<std::string>()});
    return std::nullopt;
  }
  if (!v->is_array()) return FieldError("prompt", kWant, *v);
  if (v->empty()) return InvalidRequest("'prompt' must not be empty", "prompt");
  if (v->front().is_number()) {  // one prompt of token ids
    Prompt p{.is_tokens = true};
    if (auto e = ReadTokenIds(*v, "prompt", p.token_ids)) return e;
    out.push_back(std::move(p));
    return std::nullopt;
  }
  const bool strings = v->front().is_string();
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& item = (*v)[i];
    const std::string param = absl::StrCat("prompt[", i, "]");
    if (strings && item.is_string()) {
      out.push_back(Prompt{.text = item.get<std::string>()});
    } else if (!strings && item.is_array()) {
      Prompt p{.is_tokens = true};
      if (auto e = ReadTokenIds(item, param, p.token_ids)) return e;
      out.push_back(std::move(p));
    } else if (i == 0) {
      return FieldError(param, "a string, a token id or an array of token ids", item);
    } else {
      return FieldError(
          param, strings ? "a string, like prompt[0]" : "an array of token ids, like prompt[0]",
          item);
    }
  }
  return std::nullopt;
}

// "content": a string, an array of {"type": "text", "text": ...} parts (joined with "\n", as vLLM
// does), or null for an assistant message (one that only made tool calls).
MaybeError ReadContent(const Json& message, const std::string& param, ChatMessage& out) {
  const std::string content_param = absl::StrCat(param, ".content");
  const Json* v = FindField(message, "content");
  if (v == nullptr) {
    if (out.role == "assistant") return std::nullopt;
    return Missing(content_param);
  }
  if (v->is_string()) {
    out.content = v->get<std::string>();
    return std::nullopt;
  }
  if (!v->is_array()) {
    return FieldError(content_param, "a string or an array of content parts", *v);
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& part = (*v)[i];
    const std::string part_param = absl::StrCat(content_param, "[", i, "]");
    if (!part.is_object()) return FieldError(part_param, "an object with 'type' and 'text'", part);
    const Json* type = FindField(part, "type");
    if (type == nullptr) return Missing(absl::StrCat(part_param, ".type"));
    if (!type->is_string() || *type != "text") {
      std::string got = type->is_string() ? type->get<std::string>() : type->type_name();
      if (got.size() > 40) got = absl::StrCat(got.substr(0, 40), "...");
      return InvalidRequest(absl::StrCat("Only text content parts are supported ('", part_param,
                                         ".type' must be \"text\"), got \"", got, "\""),
                            absl::StrCat(part_param, ".type"));
    }
    const Json* text = FindField(part, "text");
    if (text == nullptr) return Missing(absl::StrCat(part_param, ".text"));
    if (!text->is_string()) return FieldError(absl::StrCat(part_param, ".text"), "a string", *text);
    if (i > 0) out.content += '\n';
    out.content += text->get_ref<const std::string&>();
  }
  return std::nullopt;
}

MaybeError ReadMessages(const Json& j, std::vector<ChatMessage>& out) {
  const Json* v = FindField(j, "messages");
  if (v == nullptr) return Missing("messages");
  if (!v->is_array()) return FieldError("messages", "an array of messages", *v);
  if (v->empty()) return InvalidRequest("'messages' must contain at least one message", "messages");
  out.reserve(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& m = (*v)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return FieldError(param, "an object with 'role' and 'content'", m);
    ChatMessage message;
    const Json* role = FindField(m, "role");
    if (role == nullptr) return Missing(absl::StrCat(param, ".role"));
    if (!role->is_string() || role->get_ref<const std::string&>().empty()) {
      return FieldError(absl::StrCat(param, ".role"), "a non-empty string", *role);
    }
    message.role = role->get<std::string>();
    if (auto e = ReadContent(m, param, message)) return e;
    if (const Json* name = FindField(m, "name")) {
      if (!name->is_string()) return FieldError(absl::StrCat(param, ".name"), "a string", *name);
      message.name = name->get<std::string>();
    }
    out.push_back(std::move(message));
  }
  return std::nullopt;
}

}  // namespace

ApiOr<CompletionRequest> ParseCompletionRequest(std::string_view body,
                                                const RequestLimits& limits) {
  ApiOr<Json> j = ParseJsonObject(body, limits.max_json_depth);
  if (!j.ok()) return j.error();
  CompletionRequest out;
  if (auto e = ReadCommon(*j, limits, out)) return *e;
  if (auto e = ReadPrompts(*j, out.prompts)) return *e;
  std::optional<bool> echo;
  if (auto e = ReadBool(*j, "echo", echo)) return *e;
  out.echo = echo.value_or(false);
  std::optional<int32_t> logprobs;
  if (auto e = ReadInt32(*j, "logprobs", 0, limits.max_logprobs,
                         absl::StrCat("an integer in [0, ", limits.max_logprobs, "]"), logprobs)) {
    return *e;
  }
  if (logprobs.has_value()) {
    out.sampling.logprobs = true;
    out.sampling.top_logprobs = *logprobs;
  }
  out.unknown_fields = UnknownFields(*j, kCompletionFieldNames);
  return out;
}

ApiOr<ChatRequest> ParseChatRequest(std::string_view body, const RequestLimits& limits) {
  ApiOr<Json> j = ParseJsonObject(body, limits.max_json_depth);
  if (!j.ok()) return j.error();
  ChatRequest out;
  if (auto e = ReadCommon(*j, limits, out)) return *e;
  if (auto e = ReadMessages(*j, out.messages)) return *e;
  std::optional<int32_t> max_completion_tokens;
  if (auto e = ReadInt32(*j, "max_completion_tokens", 1, kInt32Max, "a positive integer",
                         max_completion_tokens)) {
    return *e;
  }
  if (max_completion_tokens.has_value()) out.sampling.max_tokens = max_completion_tokens;
  if (auto e = ReadChatLogprobs(*j, out.sampling)) return *e;
  if (out.sampling.top_logprobs.value_or(0) > limits.max_logprobs) {
    return FieldError("top_logprobs", absl::StrCat("an integer in [0, ", limits.max_logprobs, "]"),
                      Json(*out.sampling.top_logprobs));
  }
  out.unknown_fields = UnknownFields(*j, kChatFieldNames);
  return out;
}

ApiOr<int32_t> CheckContextLength(int64_t prompt_tokens, std::optional<int32_t> max_tokens,
                                  int32_t max_model_len, std::string_view prompt_param) {
  const std::string param(prompt_param);
  if (prompt_tokens >= max_model_len) {
    return InvalidRequest(
        absl::StrCat("This model's maximum context length is ", max_model_len,
                     " tokens. However, your request has ", prompt_tokens,
                     " input tokens, which leaves no room for output. Please reduce the length "
                     "of the ",
                     param == "messages" ? "messages" : "prompt", "."),
        param);
  }
  const int64_t room = max_model_len - prompt_tokens;
  if (!max_tokens.has_value()) return static_cast<int32_t>(room);
  if (*max_tokens > room) {
    return InvalidRequest(
        absl::StrCat("'max_tokens' is too large: ", *max_tokens,
                     ". This model's maximum context length is ", max_model_len,
                     " tokens and your request has ", prompt_tokens, " input tokens (", *max_tokens,
                     " > ", max_model_len, " - ", prompt_tokens, ")."),
        "max_tokens");
  }
  return *max_tokens;
}

}  // namespace kvfold::api
