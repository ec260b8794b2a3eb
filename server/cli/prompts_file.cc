#include "server/cli/prompts_file.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace kvfold::cli {
namespace {

using nlohmann::json;

absl::Status FieldError(std::string_view field, std::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat("'", absl::string_view(field.data(), field.size()),
                                                 "' must be ",
                                                 absl::string_view(want.data(), want.size())));
}

absl::Status ParseOptional(const json& j, PromptLine& out) {
  if (auto it = j.find("max_tokens"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 ||
        it->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return FieldError("max_tokens", "a positive integer");
    }
    out.max_tokens = static_cast<int32_t>(it->get<int64_t>());
  }
  if (auto it = j.find("temperature"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || !(it->get<double>() >= 0.0) || !std::isfinite(it->get<double>())) {
      return FieldError("temperature", "a number >= 0");
    }
    out.temperature = static_cast<float>(it->get<double>());
  }
  if (auto it = j.find("seed"); it != j.end() && !it->is_null()) {
    if (!it->is_number_unsigned()) return FieldError("seed", "a non-negative integer");
    out.seed = it->get<uint64_t>();
  }
  if (auto it = j.find("stop"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      out.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const json& s : *it) {
        if (!s.is_string()) return FieldError("stop", "a string or an array of strings");
        out.stop.push_back(s.get<std::string>());
      }
    } else {
      return FieldError("stop", "a string or an array of strings");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PromptLine> ParsePromptLine(std::string_view line) {
  const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the line is not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("the line must be a JSON object");
  PromptLine out;
  auto prompt = j.find("prompt");
  if (prompt == j.end() || !prompt->is_string()) return FieldError("prompt", "a string");
  out.prompt = prompt->get<std::string>();
  if (absl::Status s = ParseOptional(j, out); !s.ok()) return s;
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
