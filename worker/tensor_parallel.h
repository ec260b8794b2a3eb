// Megatron-style tensor parallelism: which part of a Llama model one rank of a tensor-parallel
// group holds. Rank r of `size` holds
//   - query heads [r·H/size, (r+1)·H/size) and their KV heads [r·KV/size, (r+1)·KV/size) (a KV
//     group's query heads stay with it), so q/k/v_proj are split by rows (heads) and o_proj by
//     columns (its input dimension);
//   - MLP columns [r·F/size, (r+1)·F/size): gate/up_proj by rows, down_proj by columns;
//   - vocabulary rows [r·⌈V/size⌉, min(V, (r+1)·⌈V/size⌉)) of the embeddings and the LM head.
// Everything else (norms, the residual stream) is replicated. LlamaModel all-reduces the partial
// outputs of o_proj and down_proj, all-reduces the embeddings (zeros outside a rank's vocabulary
// rows) and all-gathers the logits.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "worker/attention_plan.h"
#include "worker/communicator.h"
#include "worker/model_config.h"

namespace kvfold {

struct TensorParallel {
  int rank = 0;
  int size = 1;
  // The group's collectives; required when size > 1 (its rank and size must match), unused at
  // size 1. Outlives the model.
  Communicator* comm = nullptr;
};

// A contiguous range [begin, begin + count) of a dimension.
struct ShardRange {
  int64_t begin = 0;
  int64_t count = 0;
};

// Checks that `tp` can shard `config`: size divides the KV heads (and so the query heads) and the
// intermediate size, rank in range, a communicator of the same rank and size when size > 1.
absl::Status CheckTensorParallel(const ModelConfig& config, const TensorParallel& tp);

// The dimensions rank `tp.rank` holds (CheckTensorParallel first).
ShardRange QueryHeadShard(const ModelConfig& config, const TensorParallel& tp);
ShardRange KvHeadShard(const ModelConfig& config, const TensorParallel& tp);
ShardRange IntermediateShard(const ModelConfig& config, const TensorParallel& tp);
// Vocabulary rows: ⌈V/size⌉ per rank (the last rank may hold fewer, or none).
int64_t VocabShardStride(const ModelConfig& config, const TensorParallel& tp);
ShardRange VocabShard(const ModelConfig& config, const TensorParallel& tp);

// The config as one rank computes it: its query heads, KV heads and intermediate size (hidden
// size, vocabulary and everything else unchanged). At size 1, `config` itself.
ModelConfig ShardConfig(const ModelConfig& config, const TensorParallel& tp);

// The plan over one rank's heads: share alignments and cluster maps renumbered to the rank's
// heads (a validated plan with tp.size keeps both within a shard), cluster counts of the rank's
// representatives. Validates against ShardConfig at tp 1.
AttentionPlan ShardPlan(const AttentionPlan& plan, const ModelConfig& config,
                        const TensorParallel& tp);

}  // namespace kvfold
