#include "scheduler/request.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace kvfold {
namespace {

bool InRange(float v, float lo, float hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  auto error = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return error("temperature must be a finite number >= 0");
  }
  if (p.top_k < 0) return error("top_k must be >= 0 (0: off), got ", p.top_k);
  if (!InRange(p.top_p, 0.0f, 1.0f) || p.top_p == 0.0f) {
    return error("top_p must be in (0, 1], got ", p.top_p);
  }
  if (!InRange(p.min_p, 0.0f, 1.0f)) return error("min_p must be in [0, 1], got ", p.min_p);
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0) {
    return error("repetition_penalty must be a finite number > 0, got ", p.repetition_penalty);
  }
  if (!InRange(p.frequency_penalty, -2.0f, 2.0f)) {
    return error("frequency_penalty must be in [-2, 2], got ", p.frequency_penalty);
  }
  if (!InRange(p.presence_penalty, -2.0f, 2.0f)) {
    return error("presence_penalty must be in [-2, 2], got ", p.presence_penalty);
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0) return error("logit_bias: invalid token id ", token);
    if (!InRange(bias, -100.0f, 100.0f)) {
      return error("logit_bias for token ", token, " must be in [-100, 100], got ", bias);
    }
  }
  if (p.top_logprobs < 0 || p.top_logprobs > 20) {
    return error("top_logprobs must be in [0, 20], got ", p.top_logprobs);
  }
  if (p.top_logprobs > 0 && !p.logprobs) return error("top_logprobs requires logprobs");
  return absl::OkStatus();
}

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
  }
  return "error";
}

}  // namespace kvfold
