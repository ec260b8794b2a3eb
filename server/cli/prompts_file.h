// `kvfold generate --prompts-file`: one JSON object per line in, one per line out. This edge
// turns each line into native values; JSON never travels deeper.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "scheduler/request.h"
#include "server/api/sampling_fields.h"

namespace kvfold::cli {

// One line: {"prompt": "...", "max_tokens": 32, "temperature": 0.8, "seed": 7, "stop": ["\n"],
// "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.1, "frequency_penalty": 0.5,
// "presence_penalty": 0.5, "logit_bias": {"42": -100}, "logprobs": true, "top_logprobs": 3,
// "stop_token_ids": [2], "ignore_eos": false}. The sampling fields are the HTTP API's, read and
// range-checked by the same code (server/api/sampling_fields.h). Absent optional fields take the
// command's flag values (or SamplingParams's defaults).
struct PromptLine : api::SamplingFields {
  std::string prompt;
};

// InvalidArgument naming the field for bad JSON, a non-object, a missing or non-string prompt,
// or a field of the wrong type or range. Unknown fields are ignored.
absl::StatusOr<PromptLine> ParsePromptLine(std::string_view line);

// What became of one line, ready to print.
struct LineResult {
  int32_t line = 0;                                  // 1-based line number in the file
  std::string error;                                 // set: the line failed; nothing else is
  std::string error_type = "invalid_request_error";  // or "server_error"
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> logprobs;  // when the line asked for them
  std::string finish_reason;
  Usage usage;
  double ttft_ms = 0;     // submission to first token
  double latency_ms = 0;  // submission to finish
};

// {"line", "text", "token_ids", ["logprobs": [{"token_id", "logprob", "top_logprobs":
// [{"token_id", "logprob"}]}],] "finish_reason", "usage", "ttft_ms", "latency_ms"}, or
// {"line", "error": {"message", "type"}}: one line of output, without the newline. Invalid UTF-8
// in the text is replaced, never thrown.
std::string FormatLineResult(const LineResult& result);

}  // namespace kvfold::cli
