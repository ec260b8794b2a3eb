// What a client asks the engine for, and what the engine streams back: token-level, native types
// (the server converts JSON/protobuf at its edge; text work such as stop strings stays there).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace kvfold {

using RequestId = uint64_t;

// How the worker turns logits into a token. Seeded sampling is keyed by (seed, output index), so
// a request's tokens do not depend on what else is in the batch or on preemption.
//
// Order of application (vLLM's): logit_bias -> repetition, frequency and presence penalties ->
// temperature (0: greedy, argmax of the biased and penalized logits) -> top_k -> top_p -> min_p
// -> draw. Reported logprobs are the log-softmax of the model's raw logits, before all of these.
struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  uint64_t seed = 0;
  bool logprobs = false;  // return each sampled token's log-probability (RequestOutput::logprobs)
  int32_t top_k = 0;      // keep the k most likely tokens (ties: lower id first); 0: off
  float top_p = 1.0f;     // keep the smallest most-likely prefix with mass >= top_p; 1: off
  float min_p = 0.0f;     // drop tokens with prob < min_p * the highest prob; 0: off
  // HF/vLLM: a token seen in the prompt or the output has a positive logit divided by it and a
  // negative one multiplied by it; 1: off.
  float repetition_penalty = 1.0f;
  // OpenAI: logit -= frequency_penalty * count + presence_penalty * (count > 0), count over the
  // output tokens so far; 0: off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // Added to the token's logit before everything else; ids outside the vocabulary are ignored.
  std::vector<std::pair<int32_t, float>> logit_bias;
  int32_t top_logprobs = 0;  // most likely alternatives per token, 0..20; needs logprobs

  // Whether sampling reads the sequence's prompt and output tokens (the penalties).
  bool NeedsHistory() const {
    return repetition_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f;
  }
};

// InvalidArgument naming the field when a value is out of range.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// One token's log-probability and its most likely alternatives (highest first, ties by lower
// id), all from the log-softmax of the raw logits.
struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
  // vLLM's rank: how many tokens are at least as likely as token_id (1: the most likely); 0: not
  // computed (output logprobs leave it out).
  int32_t rank = 0;
  std::vector<std::pair<int32_t, float>> top;  // (token id, logprob); top_logprobs entries
};

struct Request {
  RequestId id = 0;
  std::vector<int32_t> prompt_token_ids;
  SamplingParams sampling;
  int32_t max_tokens = 16;
  std::vector<int32_t> stop_token_ids;  // besides the model's EOS ids
  bool ignore_eos = false;
  // Lower runs first, as in vLLM; among equals, earlier arrival first. Preemption picks the
  // lowest-priority (highest value), most recently admitted running request.
  int32_t priority = 0;
  // vLLM's prompt_logprobs: unset, none; k (0..20), each prompt token's log-probability given
  // the tokens before it, plus its k most likely alternatives. Such a request bypasses the
  // prefix cache (every prompt position is computed).
  std::optional<int32_t> prompt_logprobs;
};

constexpr int32_t kMaxPromptLogprobs = 20;

enum class FinishReason { kStop, kLength, kAbort, kError };
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "abort", "error"

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens served from the prefix cache
};

// One delta of a request's output stream. The last delta has finish_reason and usage set.
struct RequestOutput {
  RequestId id = 0;
  std::vector<int32_t> token_ids;      // tokens produced since the previous delta
  std::vector<TokenLogprob> logprobs;  // one per token_ids entry when sampling.logprobs is set
  // Request::prompt_logprobs: one per prompt token from index 1 (token 0 has no context), on
  // the first delta with a token only. A request that ends before its first token (abort,
  // error) gets none.
  std::vector<TokenLogprob> prompt_logprobs;
  std::optional<FinishReason> finish_reason;
  std::string error;  // set when finish_reason is kError
  Usage usage;        // final counts, on the last delta
};

}  // namespace kvfold
