// One line per finished generation (issue 9's request log): id, token counts, timings, finish
// reason, as text or JSON. Never the prompt or the output text.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/metrics/serving_metrics.h"

namespace kvfold::metrics {

enum class LogFormat { kText, kJson };

// "text" or "json".
absl::StatusOr<LogFormat> ParseLogFormat(std::string_view text);

// `id` is the front end's request id (e.g. "cmpl-…" with ":<choice>" for n > 1).
std::string FormatRequestLog(LogFormat format, std::string_view id, const GenerationTimeline& t,
                             int32_t cached_tokens);

}  // namespace kvfold::metrics
