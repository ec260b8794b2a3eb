#include "server/metrics/request_log.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace kvfold::metrics {
namespace {

// Milliseconds, or -1 for a stage never reached.
double Ms(double seconds) { return seconds < 0 ? -1 : seconds * 1e3; }

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(std::string_view text) {
  if (text == "text") return LogFormat::kText;
  if (text == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("--log-format must be text or json, not \"", std::string(text), "\""));
}

std::string FormatRequestLog(LogFormat format, std::string_view id, const GenerationTimeline& t,
                             int32_t cached_tokens) {
  const double tpot = t.completion_tokens > 1 && t.first_token >= 0
                          ? (t.last_token - t.first_token) / (t.completion_tokens - 1)
                          : -1;
  if (format == LogFormat::kJson) {
    nlohmann::ordered_json j = {
        {"event", "request_finished"},
        {"request_id", id},
        {"finish_reason", t.finish_reason},
        {"prompt_tokens", t.prompt_tokens},
        {"completion_tokens", t.completion_tokens},
        {"cached_tokens", cached_tokens},
        {"queue_ms", Ms(t.first_scheduled)},
        {"ttft_ms", Ms(t.first_token)},
        {"tpot_ms", Ms(tpot)},
        {"e2e_ms", Ms(t.finished)},
    };
    // Ids come from the server, but replace rather than throw on anything odd.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return absl::StrFormat(
      "request %s finished: reason=%s prompt_tokens=%d completion_tokens=%d cached_tokens=%d "
      "queue_ms=%.1f ttft_ms=%.1f tpot_ms=%.2f e2e_ms=%.1f",
      std::string(id), t.finish_reason, t.prompt_tokens, t.completion_tokens, cached_tokens,
      Ms(t.first_scheduled), Ms(t.first_token), Ms(tpot), Ms(t.finished));
}

}  // namespace kvfold::metrics
