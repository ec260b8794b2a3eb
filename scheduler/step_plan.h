// The contract between the scheduler (which decides) and the worker (which computes): one
// StepPlan per engine iteration, one StepResult back. The scheduler never sees a tensor.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/request.h"

namespace kvfold {

using BlockId = int32_t;

// One sequence's share of a step: compute tokens [start_position, start_position + size) of it.
// Prefill, chunked prefill, prefill after a prefix-cache hit, recompute after preemption and
// decode are all this one shape.
struct ScheduledChunk {
  RequestId request_id = 0;
  std::vector<int32_t> token_ids;  // the tokens to compute
  int32_t start_position = 0;      // tokens of the sequence already in the KV cache
  // Every block the sequence holds, in order; covers start_position + token_ids.size() tokens.
  std::vector<BlockId> block_table;
  // The chunk ends at the sequence's last known token: sample the next one.
  bool sample = false;
  int32_t output_index = 0;  // index of the sampled token among the request's outputs
  SamplingParams sampling;
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;
  int32_t num_tokens() const {
    int32_t n = 0;
    for (const ScheduledChunk& c : chunks) n += static_cast<int32_t>(c.token_ids.size());
    return n;
  }
};

struct SampledToken {
  RequestId request_id = 0;
  int32_t token_id = 0;
  float logprob = 0.0f;  // log-probability of token_id under the model's distribution
};

// One SampledToken per chunk with `sample` set, in chunk order.
struct StepResult {
  std::vector<SampledToken> sampled;
};

// Implemented by worker/ (a model) and by tests (a deterministic stand-in).
class Executor {
 public:
  virtual ~Executor() = default;
  virtual absl::StatusOr<StepResult> Execute(const StepPlan& plan) = 0;
};

}  // namespace kvfold
