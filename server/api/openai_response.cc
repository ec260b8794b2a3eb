#include "server/api/openai_response.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvfold::api {
namespace {

using OJson = nlohmann::ordered_json;

std::string Dump(const OJson& j) { return j.dump(-1, ' ', false, OJson::error_handler_t::replace); }

OJson UsageObject(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

OJson Header(const ResponseHeader& h, std::string_view object) {
  OJson j;
  j["id"] = h.id;
  j["object"] = object;
  j["created"] = h.created;
  j["model"] = h.model;
  return j;
}

void SetUsage(const Usage* usage, bool include_usage, OJson& j) {
  if (usage != nullptr) {
    j["usage"] = UsageObject(*usage);
  } else if (include_usage) {
    j["usage"] = nullptr;
  }
}

OJson FinishReason(const std::optional<std::string>& reason) {
  return reason.has_value() ? OJson(*reason) : OJson();
}

// The legacy completions shape: parallel arrays, top alternatives as {token: logprob}.
OJson CompletionLogprobs(const std::vector<TokenLogprobText>& tokens) {
  OJson text = OJson::array(), logprob = OJson::array(), top = OJson::array(),
        offset = OJson::array();
  for (const TokenLogprobText& t : tokens) {
    text.push_back(t.token);
    if (t.no_logprob) {
      logprob.push_back(nullptr);
      top.push_back(nullptr);
      offset.push_back(t.text_offset);
      continue;
    }
    logprob.push_back(t.logprob);
    OJson alternatives = OJson::object();
    for (const auto& [token, lp] : t.top) alternatives[token] = lp;
    top.push_back(std::move(alternatives));
    offset.push_back(t.text_offset);
  }
  return {{"tokens", text},
          {"token_logprobs", logprob},
          {"top_logprobs", top},
          {"text_offset", offset}};
}

OJson Bytes(std::string_view token) {
  OJson bytes = OJson::array();
  for (unsigned char c : token) bytes.push_back(c);
  return bytes;
}

// The chat shape: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}; "bytes"
// carries the raw UTF-8 so clients can rejoin tokens that split a character.
OJson ChatLogprobs(const std::vector<TokenLogprobText>& tokens) {
  OJson content = OJson::array();
  for (const TokenLogprobText& t : tokens) {
    OJson top = OJson::array();
    for (const auto& [token, lp] : t.top) {
      top.push_back({{"token", token}, {"logprob", lp}, {"bytes", Bytes(token)}});
    }
    content.push_back({{"token", t.token},
                       {"logprob", t.logprob},
                       {"bytes", Bytes(t.token)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

OJson PromptLogprobsJson(const PromptLogprobs& tokens) {
  OJson list = OJson::array();
  list.push_back(nullptr);
  for (const std::vector<PromptTokenAlternative>& alternatives : tokens) {
    OJson entry = OJson::object();
    for (const PromptTokenAlternative& a : alternatives) {
      entry[std::to_string(a.token_id)] = {
          {"logprob", a.logprob}, {"rank", a.rank}, {"decoded_token", a.decoded_token}};
    }
    list.push_back(std::move(entry));
  }
  return list;
}

// A chat response's "prompt_logprobs": the first choice's that has them.
void SetChatPromptLogprobs(absl::Span<const ChatChoice> choices, OJson& j) {
  for (const ChatChoice& c : choices) {
    if (c.prompt_logprobs.has_value()) {
      j["prompt_logprobs"] = PromptLogprobsJson(*c.prompt_logprobs);
      return;
    }
  }
}

}  // namespace

std::string UsageJson(const Usage& usage) { return Dump(UsageObject(usage)); }

std::string CompletionJson(const ResponseHeader& header, absl::Span<const CompletionChoice> choices,
                           const Usage* usage, bool include_usage) {
  OJson j = Header(header, "text_completion");
  OJson list = OJson::array();
  for (const CompletionChoice& c : choices) {
    list.push_back({{"index", c.index},
                    {"text", c.text},
                    {"logprobs", c.logprobs ? CompletionLogprobs(*c.logprobs) : OJson()},
                    {"finish_reason", FinishReason(c.finish_reason)}});
    if (c.prompt_logprobs) list.back()["prompt_logprobs"] = PromptLogprobsJson(*c.prompt_logprobs);
  }
  j["choices"] = std::move(list);
  SetUsage(usage, include_usage, j);
  return Dump(j);
}

std::string ChatCompletionJson(const ResponseHeader& header, absl::Span<const ChatChoice> choices,
                               const Usage& usage) {
  OJson j = Header(header, "chat.completion");
  OJson list = OJson::array();
  for (const ChatChoice& c : choices) {
    list.push_back({{"index", c.index},
                    {"message", {{"role", c.role.value_or("assistant")}, {"content", c.content}}},
                    {"logprobs", c.logprobs ? ChatLogprobs(*c.logprobs) : OJson()},
                    {"finish_reason", FinishReason(c.finish_reason)}});
  }
  j["choices"] = std::move(list);
  SetChatPromptLogprobs(choices, j);
  j["usage"] = UsageObject(usage);
  return Dump(j);
}

std::string ChatChunkJson(const ResponseHeader& header, absl::Span<const ChatChoice> choices,
                          const Usage* usage, bool include_usage) {
  OJson j = Header(header, "chat.completion.chunk");
  OJson list = OJson::array();
  for (const ChatChoice& c : choices) {
    OJson delta = OJson::object();
    if (c.role) delta["role"] = *c.role;
    if (!c.content.empty() || c.role) delta["content"] = c.content;
    list.push_back({{"index", c.index},
                    {"delta", std::move(delta)},
                    {"logprobs", c.logprobs ? ChatLogprobs(*c.logprobs) : OJson()},
                    {"finish_reason", FinishReason(c.finish_reason)}});
  }
  j["choices"] = std::move(list);
  SetChatPromptLogprobs(choices, j);
  SetUsage(usage, include_usage, j);
  return Dump(j);
}

std::string SseEvent(std::string_view json) {
  return absl::StrCat("data: ", absl::string_view(json.data(), json.size()), "\n\n");
}

std::string SseDone() { return "data: [DONE]\n\n"; }

}  // namespace kvfold::api
