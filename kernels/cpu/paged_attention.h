// Causal attention over the paged KV cache, one (query row, head) at a time.
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace kvfold::cpu {

// Maps a flat query row to its sequence and the position it sits at.
struct QueryRow {
  int32_t seq;
  int32_t position;
};
QueryRow LocateQueryRow(const AttentionBatch& batch, int64_t row);

// Computes out rows' head `head` for query rows [row_begin, row_end) (each row, all heads, when
// called over a range of flat (row, head) tasks). `task` = row * num_heads + head.
void AttendTasks(const TensorView& q, const KvCacheLayer& cache, const AttentionBatch& batch,
                 int num_heads, float scale, int64_t task_begin, int64_t task_end, TensorView out);

}  // namespace kvfold::cpu
