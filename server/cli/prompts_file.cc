#include "server/cli/prompts_file.h"

#include <cmath>
#include <optional>

namespace kvfold::cli {
namespace {

using nlohmann::json;

nlohmann::ordered_json LogprobsJson(const std::vector<TokenLogprob>& logprobs) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const TokenLogprob& lp : logprobs) {
    nlohmann::ordered_json top = nlohmann::ordered_json::array();
    for (const auto& [id, logprob] : lp.top)
      top.push_back({{"token_id", id}, {"logprob", logprob}});
    list.push_back({{"token_id", lp.token_id}, {"logprob", lp.logprob}, {"top_logprobs", top}});
  }
  return list;
}

}  // namespace

absl::StatusOr<PromptLine> ParsePromptLine(std::string_view line) {
  const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the line is not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("the line must be a JSON object");
  PromptLine out;
  auto prompt = j.find("prompt");
  if (prompt == j.end() || !prompt->is_string()) {
    return absl::InvalidArgumentError("'prompt' must be a string");
  }
  out.prompt = prompt->get<std::string>();
  std::optional<api::ApiError> error = api::ReadSamplingFields(j, out);
  if (!error) error = api::ReadChatLogprobs(j, out);
  if (error) return absl::InvalidArgumentError(error->message);
  return out;
}

std::string FormatLineResult(const LineResult& r) {
  nlohmann::ordered_json j;  // fields in the order written here, "line" first
  j["line"] = r.line;
  if (!r.error.empty()) {
    j["error"] = {{"message", r.error}, {"type", r.error_type}};
  } else {
    j["text"] = r.text;
    j["token_ids"] = r.token_ids;
    if (!r.logprobs.empty()) j["logprobs"] = LogprobsJson(r.logprobs);
    j["finish_reason"] = r.finish_reason;
    j["usage"] = {{"prompt_tokens", r.usage.prompt_tokens},
                  {"completion_tokens", r.usage.completion_tokens},
                  {"cached_tokens", r.usage.cached_tokens}};
    j["ttft_ms"] = std::round(r.ttft_ms * 1000) / 1000;
    j["latency_ms"] = std::round(r.latency_ms * 1000) / 1000;
  }
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace kvfold::cli
