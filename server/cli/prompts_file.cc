#include "server/cli/prompts_file.h"

#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
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

// The field's value, or nullptr when it is absent or null.
const json* Field(const json& j, std::string_view name) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

bool IsInt32(const json& v) {
  return v.is_number_integer() && v.get<int64_t>() >= std::numeric_limits<int32_t>::min() &&
         v.get<int64_t>() <= std::numeric_limits<int32_t>::max();
}

absl::Status ParseNumber(const json& j, std::string_view name, std::optional<float>& out) {
  if (const json* v = Field(j, name)) {
    if (!v->is_number()) return FieldError(name, "a number");
    out = static_cast<float>(v->get<double>());
  }
  return absl::OkStatus();
}

absl::Status ParseInt(const json& j, std::string_view name, std::optional<int32_t>& out) {
  if (const json* v = Field(j, name)) {
    if (!IsInt32(*v)) return FieldError(name, "an integer");
    out = static_cast<int32_t>(v->get<int64_t>());
  }
  return absl::OkStatus();
}

absl::Status ParseBool(const json& j, std::string_view name, std::optional<bool>& out) {
  if (const json* v = Field(j, name)) {
    if (!v->is_boolean()) return FieldError(name, "true or false");
    out = v->get<bool>();
  }
  return absl::OkStatus();
}

absl::Status ParseTokenFields(const json& j, PromptLine& out) {
  if (const json* v = Field(j, "logit_bias")) {
    if (!v->is_object()) return FieldError("logit_bias", "an object of \"token id\": bias");
    for (const auto& [key, bias] : v->items()) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(key, &id) || !bias.is_number()) {
        return FieldError("logit_bias", "an object of \"token id\": bias");
      }
      out.logit_bias.emplace_back(id, static_cast<float>(bias.get<double>()));
    }
  }
  if (const json* v = Field(j, "stop_token_ids")) {
    if (!v->is_array()) return FieldError("stop_token_ids", "an array of token ids");
    for (const json& id : *v) {
      if (!IsInt32(id)) return FieldError("stop_token_ids", "an array of token ids");
      out.stop_token_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseSampling(const json& j, PromptLine& out) {
  for (auto [name, field] : {std::pair{"top_p", &out.top_p}, std::pair{"min_p", &out.min_p},
                             std::pair{"repetition_penalty", &out.repetition_penalty},
                             std::pair{"frequency_penalty", &out.frequency_penalty},
                             std::pair{"presence_penalty", &out.presence_penalty}}) {
    if (absl::Status s = ParseNumber(j, name, *field); !s.ok()) return s;
  }
  if (absl::Status s = ParseInt(j, "top_k", out.top_k); !s.ok()) return s;
  if (absl::Status s = ParseInt(j, "top_logprobs", out.top_logprobs); !s.ok()) return s;
  if (absl::Status s = ParseBool(j, "logprobs", out.logprobs); !s.ok()) return s;
  if (absl::Status s = ParseBool(j, "ignore_eos", out.ignore_eos); !s.ok()) return s;
  return ParseTokenFields(j, out);
}

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
  if (prompt == j.end() || !prompt->is_string()) return FieldError("prompt", "a string");
  out.prompt = prompt->get<std::string>();
  if (absl::Status s = ParseOptional(j, out); !s.ok()) return s;
  if (absl::Status s = ParseSampling(j, out); !s.ok()) return s;
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
