// The sampling and stopping fields that every JSON edge shares (`/v1/completions`,
// `/v1/chat/completions`, `kvfold generate --prompts-file`), read and range-checked once, and
// their mapping onto SamplingParams.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "scheduler/request.h"
#include "server/api/json_fields.h"

namespace kvfold::api {

// Absent fields stay unset so the caller's defaults apply. Ranges are the engine's
// (ValidateSamplingParams), checked here so the error can name the field.
struct SamplingFields {
  std::optional<int32_t> max_tokens;  // >= 1
  std::optional<float> temperature;   // >= 0; 0: greedy
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;  // a string or an array of strings; empty strings are dropped
  std::optional<int32_t> top_k;   // >= 0; -1 (vLLM's "off") reads as 0
  std::optional<float> top_p;     // (0, 1]
  std::optional<float> min_p;     // [0, 1]
  std::optional<float> repetition_penalty;                   // > 0
  std::optional<float> frequency_penalty, presence_penalty;  // [-2, 2]
  std::vector<std::pair<int32_t, float>> logit_bias;         // {"token id": bias in [-100, 100]}
  std::optional<bool> logprobs;
  std::optional<int32_t> top_logprobs;  // [0, 20]; needs logprobs
  std::vector<int32_t> stop_token_ids;
  std::optional<bool> ignore_eos;
};

// The most alternatives per token the sampler returns (SamplingParams::top_logprobs).
inline constexpr int32_t kMaxTopLogprobs = 20;

// Every field above except logprobs / top_logprobs, whose shapes differ between endpoints.
MaybeError ReadSamplingFields(const Json& object, SamplingFields& out);

// Chat's (and --prompts-file's) shape: "logprobs": bool, "top_logprobs": int, the latter only
// with logprobs true.
MaybeError ReadChatLogprobs(const Json& object, SamplingFields& out);

// `defaults` with every set field replaced. logprobs defaults to true when top_logprobs > 0.
SamplingParams ToSamplingParams(const SamplingFields& fields, const SamplingParams& defaults);

}  // namespace kvfold::api
