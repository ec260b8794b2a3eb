// One forward step's batch: a flat list of tokens from several sequences and where they live in
// the paged KV cache; and the same arrays owned, for batches built outside the executor.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kernels/ops.h"

namespace kvfold {

// One forward step over a flat batch of tokens from several sequences.
struct ForwardBatch {
  absl::Span<const int32_t> token_ids;  // num_tokens
  absl::Span<const int32_t> positions;  // num_tokens
  AttentionBatch attention;
  // Token rows whose logits are wanted, e.g. each sequence's last row (or every row, for goldens).
  absl::Span<const int32_t> logits_rows;
};

// A ForwardBatch's arrays, owned: batches built outside the executor (a follower's step, a padded
// graph step, the GPU profiling step, tests).
struct ForwardBatchArrays {
  std::vector<int32_t> token_ids, positions, query_start, context_len, block_tables, logits_rows;
  std::vector<int64_t> slot_mapping;
  int32_t max_blocks_per_seq = 0;

  // The batch over these arrays: valid while they are unchanged.
  ForwardBatch View() const {
    ForwardBatch b;
    b.token_ids = token_ids;
    b.positions = positions;
    b.attention.query_start = query_start;
    b.attention.context_len = context_len;
    b.attention.block_tables = block_tables;
    b.attention.max_blocks_per_seq = max_blocks_per_seq;
    b.attention.slot_mapping = slot_mapping;
    b.logits_rows = logits_rows;
    return b;
  }

  bool operator==(const ForwardBatchArrays&) const = default;
};

}  // namespace kvfold
