#include "worker/tensor_parallel.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"
#include "glog/logging.h"

namespace kvfold {

absl::Status CheckTensorParallel(const ModelConfig& config, const TensorParallel& tp) {
  if (tp.size < 1 || tp.rank < 0 || tp.rank >= tp.size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor-parallel rank %d is not in [0, %d)", tp.rank, tp.size));
  }
  if (config.num_kv_heads % tp.size != 0 || config.num_heads % tp.size != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor-parallel size %d does not divide the model's %d KV heads (and %d query heads): "
        "each rank holds whole KV heads with their query heads",
        tp.size, config.num_kv_heads, config.num_heads));
  }
  if (config.intermediate_size % tp.size != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor-parallel size %d does not divide the model's intermediate size %d",
                        tp.size, config.intermediate_size));
  }
  if (tp.size > 1) {
    if (tp.comm == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor-parallel size %d needs a communicator", tp.size));
    }
    if (tp.comm->rank() != tp.rank || tp.comm->size() != tp.size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the communicator is rank %d of %d; the model was asked for rank %d of %d",
          tp.comm->rank(), tp.comm->size(), tp.rank, tp.size));
    }
  }
  return absl::OkStatus();
}

namespace {
ShardRange EvenShard(int64_t n, const TensorParallel& tp) {
  const int64_t count = n / tp.size;
  return {tp.rank * count, count};
}
}  // namespace

ShardRange QueryHeadShard(const ModelConfig& config, const TensorParallel& tp) {
  return EvenShard(config.num_heads, tp);
}

ShardRange KvHeadShard(const ModelConfig& config, const TensorParallel& tp) {
  return EvenShard(config.num_kv_heads, tp);
}

ShardRange IntermediateShard(const ModelConfig& config, const TensorParallel& tp) {
  return EvenShard(config.intermediate_size, tp);
}

int64_t VocabShardStride(const ModelConfig& config, const TensorParallel& tp) {
  return (config.vocab_size + tp.size - 1) / tp.size;
}

ShardRange VocabShard(const ModelConfig& config, const TensorParallel& tp) {
  const int64_t stride = VocabShardStride(config, tp);
  const int64_t begin = std::min<int64_t>(config.vocab_size, tp.rank * stride);
  const int64_t end = std::min<int64_t>(config.vocab_size, begin + stride);
  return {begin, end - begin};
}

ModelConfig ShardConfig(const ModelConfig& config, const TensorParallel& tp) {
  ModelConfig local = config;
  local.num_heads = config.num_heads / tp.size;
  local.num_kv_heads = config.num_kv_heads / tp.size;
  local.intermediate_size = config.intermediate_size / tp.size;
  return local;
}

AttentionPlan ShardPlan(const AttentionPlan& plan, const ModelConfig& config,
                        const TensorParallel& tp) {
  if (tp.size == 1) return plan;
  const ShardRange heads = QueryHeadShard(config, tp), kv = KvHeadShard(config, tp);
  AttentionPlan local = plan;
  for (LayerPlan& l : local.layers) {
    if (l.mode == AttentionMode::kShare && !l.align.empty()) {
      std::vector<int32_t> align;
      for (int64_t h = heads.begin; h < heads.begin + heads.count; ++h) {
        CHECK(l.align[h] >= heads.begin && l.align[h] < heads.begin + heads.count)
            << "plan not validated for tp";
        align.push_back(static_cast<int32_t>(l.align[h] - heads.begin));
      }
      l.align = std::move(align);
    }
    if (l.mode == AttentionMode::kCluster) {
      std::vector<int32_t> map;
      int32_t clusters = 0;
      for (int64_t g = kv.begin; g < kv.begin + kv.count; ++g) {
        CHECK(l.static_map[g] >= kv.begin && l.static_map[g] < kv.begin + kv.count)
            << "plan not validated for tp";
        map.push_back(static_cast<int32_t>(l.static_map[g] - kv.begin));
        if (l.static_map[g] == g) ++clusters;
      }
      l.static_map = std::move(map);
      l.clusters = clusters;
    }
  }
  return local;
}

}  // namespace kvfold
