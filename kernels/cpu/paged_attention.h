// The CPU paged-attention kernel family (Ops::FoldedPagedAttention): one task per (query row, head
// group); a group's P is computed (or read) once and applied to each member's V.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kernels/attention_heads.h"
#include "kernels/cpu/isa.h"
#include "kernels/ops.h"

namespace kvfold::cpu {

// Maps a flat query row to its sequence and the position it sits at.
struct QueryRow {
  int32_t seq;
  int32_t position;
};
QueryRow LocateQueryRow(const AttentionBatch& batch, int64_t row);

// Everything the tasks of one call read (validated by PrepareFoldedAttention).
struct FoldedAttentionArgs {
  TensorView q;
  const KvCacheLayer* k_layer;
  const KvCacheLayer* v_layer;
  const AttentionBatch* batch;
  const AttentionHeadGroups* groups;
  const AttentionProbs* probs;  // or null
  float scale;
  TensorView out;
  absl::Span<const int64_t> tasks;  // row * num_heads + group index
};

// The call's tasks: every (query row, group of its sequence's map row), in row order.
std::vector<int64_t> AttentionTasks(const AttentionBatch& batch, const AttentionHeadGroups& groups);

// Runs tasks [task_begin, task_end). Each output element is written by one task, reduced in a
// fixed order that depends only on its sequence's shapes: any split over threads, any batch and
// every ISA path give the same bits.
using AttendTasksFn = void (*)(const FoldedAttentionArgs& args, int64_t task_begin,
                               int64_t task_end);
// The implementation for `isa`, which must be supported.
AttendTasksFn AttendTasksFor(Isa isa);

}  // namespace kvfold::cpu
