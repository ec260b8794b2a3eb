// Bytes one decode step reads from memory, for the roofline: every weight the forward pass reads,
// as stored (a GGUF's quantized blocks, not their F32 value), plus the KV cache of the context.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/weight_source.h"

namespace kvfold {

struct DecodeBytes {
  size_t weights = 0;        // every matrix and vector once per step (lm_head incl. when tied)
  size_t embedding_row = 0;  // one token's embedding row, per sequence
  size_t kv_per_token = 0;   // K and V of one context token, all layers, at the KV dtype

  // One step of `batch` sequences, each attending over `context` tokens.
  size_t PerStep(int64_t context, int64_t batch = 1) const {
    return weights + static_cast<size_t>(batch) *
                         (embedding_row + static_cast<size_t>(context) * kv_per_token);
  }
};

// Reads the sizes from `source` under the names LlamaModel loads (worker/llama_model.cc).
absl::StatusOr<DecodeBytes> ComputeDecodeBytes(const WeightSource& source, DType kv_dtype);

}  // namespace kvfold
