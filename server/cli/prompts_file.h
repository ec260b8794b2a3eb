// `kvfold generate --prompts-file`: one JSON object per line in, one per line out. This edge
// turns each line into native values; JSON never travels deeper.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "scheduler/request.h"

namespace kvfold::cli {

// One line: {"prompt": "...", "max_tokens": 32, "temperature": 0.8, "seed": 7, "stop": ["\n"]}.
// Absent optional fields take the command's flag values.
struct PromptLine {
  std::string prompt;
  std::optional<int32_t> max_tokens;
  std::optional<float> temperature;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;  // a string or an array of strings
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
  std::string finish_reason;
  Usage usage;
  double ttft_ms = 0;     // submission to first token
  double latency_ms = 0;  // submission to finish
};

// {"line", "text", "token_ids", "finish_reason", "usage", "ttft_ms", "latency_ms"}, or
// {"line", "error": {"message", "type"}}: one line of output, without the newline. Invalid UTF-8
// in the text is replaced, never thrown.
std::string FormatLineResult(const LineResult& result);

}  // namespace kvfold::cli
