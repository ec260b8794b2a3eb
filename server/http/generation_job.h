// One `/v1/completions` or `/v1/chat/completions` request between the HTTP layer and the engine:
// the body turned into generations (validated, templated, tokenized; n per prompt), and their
// deltas turned back into response bytes (SSE events while streaming, one JSON body otherwise).
// No sockets here: the session feeds it deltas on its strand and writes what it returns.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/api/api_error.h"
#include "server/api/openai_response.h"
#include "server/serving/served_model.h"
#include "server/serving/serving_engine.h"

namespace kvfold::http {

enum class JobKind { kCompletion, kChat };

class GenerationJob {
 public:
  // Parses and validates `body`, renders the chat template, tokenizes and checks every prompt
  // against the context. Errors are the client's (400, or 404 for an unknown model).
  static api::ApiOr<std::unique_ptr<GenerationJob>> Create(JobKind kind, std::string_view body,
                                                           const serving::ServedModel& model);

  // The generations to submit, choice i at index i (OpenAI's order: prompt-major, then n).
  // Moved out once by the session.
  std::vector<serving::GenerationRequest>& requests() { return requests_; }
  size_t num_choices() const { return choices_.size(); }
  bool stream() const { return stream_; }

  // Streaming: the SSE events that open the stream (chat: each choice's role; completions with
  // echo: the prompt text).
  std::string StreamStart();
  // Takes one choice's delta. Streaming: returns the SSE events to write now (maybe none).
  std::string OnDelta(size_t choice, serving::GenerationDelta delta);
  bool finished() const { return num_finished_ == choices_.size(); }
  // Once finished(): streaming, the usage chunk (include_usage) and `data: [DONE]`; otherwise
  // the response body. `status` is set to the HTTP status of a non-streaming reply (500 when a
  // generation failed).
  std::string Finish(int* status);

 private:
  struct Choice {
    size_t prompt = 0;        // which prompt it continues
    std::string echo;         // completions' echo: the prompt text, sent first
    std::string text;         // generated text so far (non-streaming)
    int32_t text_offset = 0;  // completions' logprobs: where the next token starts
    std::vector<api::TokenLogprobText> logprobs;
    std::optional<api::PromptLogprobs> prompt_logprobs;  // once the engine has sent them
    std::optional<std::string> finish_reason;
    std::string error;
    Usage usage;
  };

  GenerationJob(JobKind kind, const serving::ServedModel& model);
  // The engine's logprobs as text; advances the choice's text offset.
  std::vector<api::TokenLogprobText> LogprobTexts(Choice& c,
                                                  const std::vector<TokenLogprob>& logprobs) const;
  // The engine's prompt logprobs in vLLM's shape, `top` alternatives each.
  api::PromptLogprobs PromptLogprobTexts(const std::vector<TokenLogprob>& scores) const;
  // Completions' echo with logprobs: the prompt's tokens as logprobs entries (the first null),
  // offsets from 0 in the echoed text.
  std::vector<api::TokenLogprobText> EchoLogprobTexts(
      const Choice& c, const std::vector<TokenLogprob>& scores) const;
  std::string TokenText(int32_t id) const;
  Usage TotalUsage() const;

  const JobKind kind_;
  const serving::ServedModel& model_;
  api::ResponseHeader header_;
  bool stream_ = false;
  bool include_usage_ = false;
  bool logprobs_ = false;
  int32_t top_logprobs_ = 0;
  std::optional<int32_t> prompt_logprobs_;        // what the client asked for
  bool echo_logprobs_ = false;                    // completions' echo + logprobs
  std::vector<std::vector<int32_t>> prompt_ids_;  // each prompt's tokens, for echo_logprobs_
  std::vector<serving::GenerationRequest> requests_;
  std::vector<Choice> choices_;
  size_t num_finished_ = 0;
};

// The 404 for a "model" this server does not serve, in vLLM's words.
api::ApiError ModelNotFound(std::string_view name);

// Logs each unknown request field name once per process (a client sending one on every request
// would otherwise flood the log).
void LogUnknownFieldsOnce(const std::vector<std::string>& names);

}  // namespace kvfold::http
