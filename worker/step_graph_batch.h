// Host side of step graphs (Ops::BeginStepCapture): which decode steps are captured, under which
// key, and the padded batch a graph runs. A graph has fixed shapes, so a decode batch is padded to
// the next bucket of sequences and its block tables to a power-of-two width; padding rows read
// token 0 at position 0 through block 0, write no K/V (slot -1) and their logits are dropped.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kernels/ops.h"
#include "worker/forward_batch.h"

namespace kvfold {

struct StepGraphOptions {
  // One host-to-device copy of the step's arrays instead of one per op call (CUDA).
  bool stage_inputs = false;
  // Decode steps run as step graphs (implies stage_inputs); tensor-parallel size 1 only.
  bool graphs = false;
  // Sequences per graph, ascending; larger decode batches run eagerly.
  std::vector<int32_t> batch_buckets = {1, 2, 4, 8, 16, 32, 64, 128, 256};
};

// The smallest bucket >= n; 0 when n exceeds them all (or n < 1).
int32_t ChooseBatchBucket(absl::Span<const int32_t> buckets, int32_t n);
// The block-table width a graph uses for a batch `width` blocks wide: the next power of two,
// capped at `max_width` (a sequence's largest table); 0 when width > max_width.
int32_t ChooseTableWidth(int32_t width, int32_t max_width);
// The graph key of model `model`'s (rows, table width) shape: graphs belong to the Ops object,
// which several models may share, and each model's graph reads its own weights and workspace.
// Rows and width must be below kMaxStepGraphDim.
inline constexpr int32_t kMaxStepGraphDim = 1 << 20;
inline int64_t StepGraphKey(int32_t model, int32_t rows, int32_t width) {
  return (static_cast<int64_t>(model) << 40) | (static_cast<int64_t>(rows) << 20) | width;
}
// Whether `batch` is a plain decode step: every sequence has one query row and logits are wanted
// for exactly its rows.
bool IsDecodeStep(const ForwardBatch& batch);

// A decode batch padded to `rows` sequences and block tables `width` wide; owns its arrays.
struct PaddedDecodeBatch : ForwardBatchArrays {
  // Pads `batch` (a decode step with at most `rows` sequences and tables at most `width` wide);
  // View() is the padded batch.
  void Pad(const ForwardBatch& batch, int32_t rows, int32_t width);
};

}  // namespace kvfold
