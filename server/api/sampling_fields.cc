#include "server/api/sampling_fields.h"

#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvfold::api {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

MaybeError ReadStop(const Json& object, SamplingFields& out) {
  const Json* v = FindField(object, "stop");
  if (v == nullptr) return std::nullopt;
  constexpr std::string_view kWant = "a string or an array of strings";
  if (v->is_string()) {
    if (!v->get_ref<const std::string&>().empty()) out.stop.push_back(v->get<std::string>());
    return std::nullopt;
  }
  if (!v->is_array()) return FieldError("stop", kWant, *v);
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& s = (*v)[i];
    if (!s.is_string()) return FieldError("stop", kWant, s);
    if (!s.get_ref<const std::string&>().empty()) out.stop.push_back(s.get<std::string>());
  }
  return std::nullopt;
}

MaybeError ReadSeed(const Json& object, SamplingFields& out) {
  const Json* v = FindField(object, "seed");
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_unsigned()) return FieldError("seed", "a non-negative integer", *v);
  out.seed = v->get<uint64_t>();
  return std::nullopt;
}

MaybeError ReadLogitBias(const Json& object, SamplingFields& out) {
  const Json* v = FindField(object, "logit_bias");
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return FieldError("logit_bias", "an object of \"token id\": bias", *v);
  for (const auto& [key, bias] : v->items()) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(key, &id) || id < 0) {
      return InvalidRequest(
          "'logit_bias' keys must be token ids (non-negative integers as strings)", "logit_bias");
    }
    if (!bias.is_number() || !(bias.get<double>() >= -100.0 && bias.get<double>() <= 100.0)) {
      return FieldError("logit_bias", "an object of \"token id\": bias in [-100, 100]", bias);
    }
    out.logit_bias.emplace_back(id, static_cast<float>(bias.get<double>()));
  }
  return std::nullopt;
}

MaybeError ReadStopTokenIds(const Json& object, SamplingFields& out) {
  const Json* v = FindField(object, "stop_token_ids");
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) return FieldError("stop_token_ids", "an array of token ids", *v);
  for (size_t i = 0; i < v->size(); ++i) {
    int64_t id = 0;
    if (!AsInt64((*v)[i], 0, kInt32Max, &id)) {
      return FieldError("stop_token_ids", "an array of token ids (integers >= 0)", (*v)[i]);
    }
    out.stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

}  // namespace

MaybeError ReadSamplingFields(const Json& j, SamplingFields& out) {
  if (auto e = ReadInt32(j, "max_tokens", 1, kInt32Max, "a positive integer", out.max_tokens)) {
    return e;
  }
  if (auto e = ReadFloat(
          j, "temperature", [](double v) { return v >= 0; }, "a number >= 0", out.temperature)) {
    return e;
  }
  if (auto e = ReadSeed(j, out)) return e;
  if (auto e = ReadStop(j, out)) return e;
  if (auto e = ReadInt32(j, "top_k", -1, kInt32Max, "an integer >= 0 (0 or -1: off)", out.top_k)) {
    return e;
  }
  if (out.top_k == -1) out.top_k = 0;
  if (auto e = ReadFloat(
          j, "top_p", [](double v) { return v > 0 && v <= 1; }, "a number in (0, 1]", out.top_p)) {
    return e;
  }
  if (auto e = ReadFloat(
          j, "min_p", [](double v) { return v >= 0 && v <= 1; }, "a number in [0, 1]", out.min_p)) {
    return e;
  }
  if (auto e = ReadFloat(
          j, "repetition_penalty", [](double v) { return v > 0; }, "a number > 0",
          out.repetition_penalty)) {
    return e;
  }
  for (auto [name, field] : {std::pair{"frequency_penalty", &out.frequency_penalty},
                             std::pair{"presence_penalty", &out.presence_penalty}}) {
    if (auto e = ReadFloat(
            j, name, [](double v) { return v >= -2 && v <= 2; }, "a number in [-2, 2]", *field)) {
      return e;
    }
  }
  if (auto e = ReadLogitBias(j, out)) return e;
  if (auto e = ReadStopTokenIds(j, out)) return e;
  return ReadBool(j, "ignore_eos", out.ignore_eos);
}

MaybeError ReadChatLogprobs(const Json& j, SamplingFields& out) {
  if (auto e = ReadBool(j, "logprobs", out.logprobs)) return e;
  if (auto e =
          ReadInt32(j, "top_logprobs", 0, kMaxTopLogprobs,
                    absl::StrCat("an integer in [0, ", kMaxTopLogprobs, "]"), out.top_logprobs)) {
    return e;
  }
  if (out.top_logprobs.value_or(0) > 0 && !out.logprobs.value_or(false)) {
    return InvalidRequest("'top_logprobs' needs 'logprobs' set to true", "top_logprobs");
  }
  return std::nullopt;
}

SamplingParams ToSamplingParams(const SamplingFields& f, const SamplingParams& defaults) {
  SamplingParams p = defaults;
  p.temperature = f.temperature.value_or(p.temperature);
  p.seed = f.seed.value_or(p.seed);
  p.top_k = f.top_k.value_or(p.top_k);
  p.top_p = f.top_p.value_or(p.top_p);
  p.min_p = f.min_p.value_or(p.min_p);
  p.repetition_penalty = f.repetition_penalty.value_or(p.repetition_penalty);
  p.frequency_penalty = f.frequency_penalty.value_or(p.frequency_penalty);
  p.presence_penalty = f.presence_penalty.value_or(p.presence_penalty);
  if (!f.logit_bias.empty()) p.logit_bias = f.logit_bias;
  p.top_logprobs = f.top_logprobs.value_or(p.top_logprobs);
  p.logprobs = f.logprobs.value_or(p.logprobs || p.top_logprobs > 0);
  return p;
}

}  // namespace kvfold::api
