// The request side of the OpenAI-compatible API: `/v1/completions` and `/v1/chat/completions`
// bodies into plain structs, or an OpenAI-style 400 naming the field. Fields are read as vLLM
// reads them (its extensions included: top_k, min_p, repetition_penalty, ignore_eos,
// stop_token_ids, prompt_logprobs); unknown fields are ignored and listed so the server can log
// each name once. Checks that need the tokenizer or the engine (token ids inside the vocabulary,
// the prompt against the context) are the server's; CheckContextLength gives the error for the
// latter.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/api/api_error.h"
#include "server/api/json_body.h"
#include "server/api/sampling_fields.h"

namespace kvfold::api {

struct RequestLimits {
  int32_t max_n = 16;                      // choices per request
  int32_t max_logprobs = kMaxTopLogprobs;  // completions' logprobs, top_logprobs, prompt_logprobs
  int32_t max_json_depth = kDefaultMaxJsonDepth;
};

// Fields both endpoints share.
struct CommonFields {
  std::string model;  // required
  int32_t n = 1;
  std::optional<std::string> user;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage; needs stream
  std::optional<int32_t> prompt_logprobs;
  SamplingFields sampling;
  std::vector<std::string> unknown_fields;  // top-level names this parser ignored, sorted
};

// One prompt of a completions request: text, or token ids when `is_tokens`.
struct Prompt {
  bool is_tokens = false;
  std::string text;
  std::vector<int32_t> token_ids;
};

struct CompletionRequest : CommonFields {
  std::vector<Prompt> prompts;  // "prompt": a string, strings, token ids, or lists of token ids
  bool echo = false;
  // "logprobs": N sets sampling.logprobs and sampling.top_logprobs = N.
};

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "tool", ...: the template decides
  std::string content;  // a string, or the text parts joined; null (assistant only) reads as ""
  std::optional<std::string> name;
};

struct ChatRequest : CommonFields {
  std::vector<ChatMessage> messages;
  // max_completion_tokens, when given, wins over max_tokens (sampling.max_tokens).
};

ApiOr<CompletionRequest> ParseCompletionRequest(std::string_view body,
                                                const RequestLimits& limits = {});
ApiOr<ChatRequest> ParseChatRequest(std::string_view body, const RequestLimits& limits = {});

// The 400 for a prompt of `prompt_tokens` that does not fit `max_model_len` with `max_tokens`
// (unset: whatever room is left, at least one token) as vLLM words it; `prompt_param` is "prompt"
// or "messages". On success, the max_tokens to submit.
ApiOr<int32_t> CheckContextLength(int64_t prompt_tokens, std::optional<int32_t> max_tokens,
                                  int32_t max_model_len, std::string_view prompt_param);

}  // namespace kvfold::api
