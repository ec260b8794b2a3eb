// Turns a row of logits into a token. Seeded sampling draws from a counter-based generator keyed
// by (seed, output position), so a request's tokens do not depend on what else is in the batch.
// This first version does greedy and temperature; top-k/p, penalties and logprobs follow.
#pragma once

#include <cstdint>

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

// `position` is the index of this token among the request's outputs.
int32_t Sample(absl::Span<const float> logits, const SamplingParams& params, uint64_t position);

}  // namespace kvfold
