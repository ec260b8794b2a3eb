// The worker side of the engine contract: runs a StepPlan on a LlamaModel over a paged KvCache and
// samples one token per sampling chunk (with its log-probability and top alternatives when the
// request asks), and scores every prompt row of the chunks that ask (prompt logprobs). For
// requests whose sampling reads their tokens (penalties), it keeps each one's token history:
// chunk tokens are written at start_position (so recompute after preemption replays it),
// ScheduledChunk::context_token_ids fills a prefix-cache hit, and StepPlan::finished drops it.
// Single process, single rank for now; tensor parallelism wraps this later (rank 0 broadcasts the
// plan).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "scheduler/step_plan.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"

namespace kvfold {

class ModelExecutor final : public Executor {
 public:
  // `model` and `cache` must outlive the executor.
  ModelExecutor(LlamaModel& model, const KvCache& cache);

  // One forward over every chunk of the plan, then sampling. InvalidArgument (and nothing run)
  // when the plan does not fit the pool or the model: block ids out of range, a block table too
  // short for its chunk, positions beyond the model's context, two chunks of one request or
  // writing one cache slot, or a chunk that needs token history the executor lacks.
  absl::StatusOr<StepResult> Execute(const StepPlan& plan) override;
  absl::Status Idle() override { return model_.Idle(); }

  // The logits of the last Execute, one row of vocab_size each, in chunk order: a chunk's scored
  // prompt rows (ScheduledChunk::prompt_logprobs; memory grows with the step's token budget),
  // then its sampling row.
  absl::Span<const float> last_logits() const { return logits_; }

 private:
  // The flat batch of one plan; what ForwardBatch's spans point at.
  struct Batch {
    std::vector<int32_t> token_ids, positions, query_start, context_len, block_tables;
    std::vector<int64_t> slot_mapping;
    std::vector<int32_t> logits_rows;
    int32_t max_blocks_per_seq = 0;
  };
  absl::Status Validate(const StepPlan& plan) const;
  void Flatten(const StepPlan& plan, Batch& batch) const;
  // Applies plan.finished, then each history-reading chunk's tokens to its history.
  void UpdateHistories(const StepPlan& plan);
  SampledToken SampleChunk(const ScheduledChunk& chunk, absl::Span<const float> logits) const;

  LlamaModel& model_;
  const KvCache& cache_;
  Batch batch_;  // reused across steps to avoid reallocation
  std::vector<float> logits_;
  // Tokens [0, n) of each live request with SamplingParams::NeedsHistory().
  absl::flat_hash_map<RequestId, std::vector<int32_t>> histories_;
};

}  // namespace kvfold
