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
#include "kernels/cuda/sampling.h"
#include "scheduler/step_plan.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"
#include "worker/sampler.h"

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

  // Samples on the device (null: on the host, the default). Only for a model whose ops are CUDA
  // on the sampler's device; ignored under tensor parallelism (the logits are gathered on the
  // host there). Not owned, must outlive the executor.
  // A step then copies back one token per plain sampling row; the rows that need host logits
  // (logprobs, top logprobs, prompt logprobs) are copied and go through the CPU sampler, so every
  // result is the host path's (up to the rounding caveat in kernels/cuda/sampling.h).
  void set_device_sampler(DeviceSampler* sampler) { device_sampler_ = sampler; }

  // The logits of the last Execute, one row of vocab_size each, in chunk order: a chunk's scored
  // prompt rows (ScheduledChunk::prompt_logprobs; memory grows with the step's token budget),
  // then its sampling row. With a device sampler: only the rows copied to the host.
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
  // The host path: all logits rows to the host, every row sampled there.
  absl::Status ForwardAndSampleOnHost(const StepPlan& plan, const ForwardBatch& fb,
                                      StepResult& result);
  // The device path (set_device_sampler).
  absl::Status ForwardAndSampleOnDevice(const StepPlan& plan, const ForwardBatch& fb,
                                        StepResult& result);
  // Appends chunk c's prompt scores, one host row each from `next_row`.
  template <typename NextRow>
  void ScorePrompt(const ScheduledChunk& c, NextRow next_row, StepResult& result) const;
  // The chunk's tokens the penalties read; empty unless its sampling needs them.
  TokenHistory HistoryOf(const ScheduledChunk& c) const;
  SampledToken SampleChunk(const ScheduledChunk& chunk, absl::Span<const float> logits) const;

  LlamaModel& model_;
  const KvCache& cache_;
  Batch batch_;  // reused across steps to avoid reallocation
  std::vector<float> logits_;
  // Tokens [0, n) of each live request with SamplingParams::NeedsHistory().
  absl::flat_hash_map<RequestId, std::vector<int32_t>> histories_;
  DeviceSampler* device_sampler_ = nullptr;
  std::vector<int32_t> host_rows_, device_tokens_;  // the device path's, reused across steps
};

}  // namespace kvfold
