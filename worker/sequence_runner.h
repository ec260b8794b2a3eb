// Runs one sequence through a model with a trivial KV allocator (its blocks are 0, 1, 2, ...).
// Enough for `kvfold generate` and the golden tests; the engine loop replaces it for serving.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"
#include "worker/lockstep_batch.h"

namespace kvfold {

class SequenceRunner {
 public:
  static constexpr int32_t kBlockSize = 16;

  // Room for max_tokens tokens (prompt and output), K/V stored as `kv_dtype`.
  SequenceRunner(LlamaModel& model, Ops& ops, int32_t max_tokens, DType kv_dtype = DType::kF32);

  // Appends `token_ids` to the sequence and returns the logits of every new position
  // ([token_ids.size() x vocab], row-major) when all_logits, else of the last one only.
  absl::StatusOr<std::vector<float>> Append(absl::Span<const int32_t> token_ids,
                                            bool all_logits = false);
  int32_t length() const { return length_; }
  int32_t capacity() const { return capacity_; }

 private:
  LlamaModel& model_;
  int32_t capacity_;
  KvCache cache_;
  LockstepBatch batch_;  // blocks 0, 1, 2, ...
  int32_t length_ = 0;
};

}  // namespace kvfold
