#include "worker/kv_cache.h"

namespace kvfold {

KvCache::KvCache(Ops& ops, const ModelConfig& config, int32_t num_blocks, int32_t block_size)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim) {
  CHECK_GT(num_blocks, 0);
  CHECK_GT(block_size, 0);
  const int64_t slots = static_cast<int64_t>(num_blocks) * block_size;
  const int64_t width = static_cast<int64_t>(num_kv_heads_) * head_dim_;
  for (int l = 0; l < config.num_layers; ++l) {
    k_.push_back(ops.Allocate(DType::kF32, slots, width));
    v_.push_back(ops.Allocate(DType::kF32, slots, width));
  }
}

KvCacheLayer KvCache::layer(int index) const {
  return {k_[index].view(), v_[index].view(), block_size_, num_kv_heads_, head_dim_};
}

size_t KvCache::BytesPerToken(const ModelConfig& config, DType dtype) {
  return static_cast<size_t>(config.num_layers) * 2 * config.num_kv_heads * config.head_dim *
         DTypeSize(dtype);
}

}  // namespace kvfold
