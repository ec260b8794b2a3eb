// The response side of the OpenAI-compatible API: completion and chat completion objects, their
// streaming chunks, and Server-Sent Events framing. The server fills plain structs; JSON is made
// here. Text that is not valid UTF-8 (a token that ends mid-character) is replaced with U+FFFD,
// never thrown.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "scheduler/request.h"

namespace kvfold::api {

struct ResponseHeader {
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// One token with its log-probability and its most likely alternatives, as text.
struct TokenLogprobText {
  std::string token;
  float logprob = 0.0f;
  std::vector<std::pair<std::string, float>> top;
  int32_t text_offset = 0;  // completions only: where the token starts in the choice's text
  // Completions' echo: the prompt's first token, which has no context: logprob and
  // top_logprobs are null (OpenAI's echo semantics).
  bool no_logprob = false;
};

// vLLM's prompt_logprobs: one entry per prompt token from index 1, each the token itself and its
// most likely alternatives. Rendered as a list whose first entry is null (token 0 has no
// context), then {"<token id>": {"logprob", "rank", "decoded_token"}} per token.
struct PromptTokenAlternative {
  int32_t token_id = 0;
  float logprob = 0.0f;
  int32_t rank = 0;
  std::string decoded_token;
};
using PromptLogprobs = std::vector<std::vector<PromptTokenAlternative>>;

struct CompletionChoice {
  int32_t index = 0;
  std::string text;
  std::optional<std::string> finish_reason;  // unset: null (a chunk before the last)
  std::optional<std::vector<TokenLogprobText>> logprobs;
  std::optional<PromptLogprobs> prompt_logprobs;  // "prompt_logprobs" in the choice when set
};

struct ChatChoice {
  int32_t index = 0;
  std::optional<std::string> role;  // chunks: "assistant" in the first delta only
  std::string content;
  std::optional<std::string> finish_reason;
  std::optional<std::vector<TokenLogprobText>> logprobs;
  // vLLM puts a chat's prompt_logprobs beside "choices" (every choice shares the prompt): the
  // first choice that has them sets the response's (or chunk's) "prompt_logprobs".
  std::optional<PromptLogprobs> prompt_logprobs;
};

// {"id", "object": "text_completion", "created", "model", "choices": [{"index", "text",
// "logprobs": null | {"tokens", "token_logprobs", "top_logprobs", "text_offset"},
// "finish_reason"}], "usage"}: the full response and, with the same shape, each streaming chunk.
// "usage" (UsageJson) when `usage` is set; else null when `include_usage` (a chunk before the
// last of a stream that asked for usage), else omitted.
std::string CompletionJson(const ResponseHeader& header, absl::Span<const CompletionChoice> choices,
                           const Usage* usage, bool include_usage = false);

// {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details":
// {"cached_tokens"}}.
std::string UsageJson(const Usage& usage);

// Non-streaming: {"object": "chat.completion", "choices": [{"index", "message": {"role":
// "assistant", "content"}, "logprobs": null | {"content": [...]}, "finish_reason"}], "usage"}.
std::string ChatCompletionJson(const ResponseHeader& header, absl::Span<const ChatChoice> choices,
                               const Usage& usage);

// Streaming: {"object": "chat.completion.chunk", "choices": [{"index", "delta": {["role"],
// ["content"]}, "logprobs", "finish_reason"}], ["usage"]}. "usage" as in CompletionJson: with
// include_usage every chunk has "usage": null and the last one, with no choices, carries it.
std::string ChatChunkJson(const ResponseHeader& header, absl::Span<const ChatChoice> choices,
                          const Usage* usage, bool include_usage);

// "data: <json>\n\n" and the stream's end, "data: [DONE]\n\n".
std::string SseEvent(std::string_view json);
std::string SseDone();

}  // namespace kvfold::api
