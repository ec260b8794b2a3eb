// Turns a row of logits into a token. Seeded sampling draws from a counter-based generator keyed
// by (seed, output position), so a request's tokens do not depend on what else is in the batch
// or on preemption. The order of the logit processors is SamplingParams's (scheduler/request.h):
// logit_bias -> repetition / frequency / presence penalties -> temperature (or greedy) -> top_k
// -> top_p -> min_p -> one draw over the survivors in token-id order.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "scheduler/request.h"

namespace kvfold {

// A uniform float in [0, 1) from (seed, counter): SplitMix64 over their combination.
float CounterUniform(uint64_t seed, uint64_t counter);

// The highest logit's index; the lowest index among ties.
int32_t ArgMax(absl::Span<const float> logits);

// log softmax(logits)[token]: the token's log-probability under the model's own distribution
// (before temperature), summed in index order so it is batch-invariant like the logits.
float LogProbability(absl::Span<const float> logits, int32_t token);

// The k most likely tokens as (id, log softmax), highest first, ties by lower id.
std::vector<std::pair<int32_t, float>> TopLogprobs(absl::Span<const float> logits, int32_t k);

// `token`'s log-probability (LogProbability's value), its rank (vLLM's: the number of tokens whose
// logit is at least as high, itself included) and the k most likely tokens (TopLogprobs's): a
// prompt token's score.
TokenLogprob ScoreToken(absl::Span<const float> logits, int32_t token, int32_t k);

// The tokens the penalties look at: the sequence's prompt and its outputs so far.
struct TokenHistory {
  absl::Span<const int32_t> prompt;
  absl::Span<const int32_t> output;
};

// The logit processors before temperature, in place: logit_bias, then the penalties.
void ApplyBiasAndPenalties(const SamplingParams& params, const TokenHistory& history,
                           absl::Span<float> logits);

// The distribution a non-greedy draw uses, after temperature, top_k, top_p and min_p: one
// probability per token (0 for filtered tokens), summing to 1. `logits` are already biased and
// penalized. Requires params.temperature > 0.
std::vector<double> FilteredProbabilities(absl::Span<const float> logits,
                                          const SamplingParams& params);

// `position` is the index of this token among the request's outputs; the draw uses
// CounterUniform(params.seed, position) and nothing else.
int32_t Sample(absl::Span<const float> logits, const SamplingParams& params, uint64_t position,
               const TokenHistory& history = {});

}  // namespace kvfold
