// The contract between the scheduler (which decides) and the worker (which computes): one
// StepPlan per engine iteration, one StepResult back. The scheduler never sees a tensor.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
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
  // Tokens [0, start_position) of the sequence, set only when the worker may not have seen them
  // and sampling reads them (sampling.NeedsHistory()): on admission after a prefix-cache hit.
  // Otherwise the worker knows a sequence's tokens from its earlier chunks (each sampled token
  // comes back as the first token of the sequence's next chunk).
  std::vector<int32_t> context_token_ids;
  // Request::prompt_logprobs, set on every chunk of such a request until its first token (so
  // the chunk lies inside the prompt): row i is scored against the prompt token after it,
  // token_ids[i + 1], and the last row against next_prompt_token, which is -1 when the chunk
  // ends the prompt (that row samples instead).
  std::optional<int32_t> prompt_logprobs;
  int32_t next_prompt_token = -1;
  int32_t num_prompt_scores() const {
    const auto n = static_cast<int32_t>(token_ids.size());
    return prompt_logprobs.has_value() ? (next_prompt_token >= 0 ? n : n - 1) : 0;
  }
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;
  // Requests that finished or were aborted since the previous plan that had chunks: the worker
  // drops their per-request state (token history) before running this plan's chunks, so an id
  // that is reused in this plan starts fresh. Only plans with chunks carry them.
  std::vector<RequestId> finished;
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
  // The top_logprobs most likely tokens (id, logprob), highest first; empty unless asked.
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

// The prompt logprobs of one chunk with prompt_logprobs set: num_prompt_scores() entries, for
// the prompt tokens at positions start_position + 1 onwards.
struct ChunkPromptLogprobs {
  RequestId request_id = 0;
  std::vector<TokenLogprob> logprobs;
};

// One SampledToken per chunk with `sample` set, and one ChunkPromptLogprobs per chunk with
// prompt_logprobs set, each in chunk order.
struct StepResult {
  std::vector<SampledToken> sampled;
  std::vector<ChunkPromptLogprobs> prompt_logprobs;
};

// Implemented by worker/ (a model) and by tests (a deterministic stand-in).
class Executor {
 public:
  virtual ~Executor() = default;
  virtual absl::StatusOr<StepResult> Execute(const StepPlan& plan) = 0;
  // Called on the loop thread about once a second while there is no work, so an executor whose
  // peers wait for its next step (tensor-parallel followers) can tell them it is alive.
  virtual absl::Status Idle() { return absl::OkStatus(); }
};

}  // namespace kvfold
