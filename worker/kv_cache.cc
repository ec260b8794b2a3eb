#include "worker/kv_cache.h"

namespace kvfold {

std::vector<KvLayerShape> KvLayerShapes(const ModelConfig& config) {
  return std::vector<KvLayerShape>(config.num_layers,
                                   {config.num_kv_heads, config.num_kv_heads, config.head_dim});
}

size_t KvBytesPerToken(absl::Span<const KvLayerShape> layers, DType dtype) {
  size_t bytes = 0;
  for (const KvLayerShape& l : layers) {
    bytes += static_cast<size_t>(l.k_heads + l.v_heads) * l.head_dim * DTypeSize(dtype);
  }
  return bytes;
}

KvCache::KvCache(Ops& ops, const ModelConfig& config, int32_t num_blocks, int32_t block_size,
                 DType dtype)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      dtype_(dtype),
      shapes_(KvLayerShapes(config)) {
  CHECK_GT(num_blocks, 0);
  CHECK_GT(block_size, 0);
  CHECK(dtype == DType::kF32 || dtype == DType::kBF16)
      << "KV cache dtype " << DTypeName(dtype) << " is not F32 or BF16";
  const int64_t slots = static_cast<int64_t>(num_blocks) * block_size;
  for (const KvLayerShape& s : shapes_) {
    // KvCacheLayer has one head count for K and V until folded layers need two.
    CHECK_EQ(s.k_heads, s.v_heads);
    k_.push_back(ops.Allocate(dtype, slots, static_cast<int64_t>(s.k_heads) * s.head_dim));
    v_.push_back(ops.Allocate(dtype, slots, static_cast<int64_t>(s.v_heads) * s.head_dim));
  }
}

KvCacheLayer KvCache::layer(int index) const {
  const KvLayerShape& s = shapes_[index];
  return {k_[index].view(), v_[index].view(), block_size_, s.k_heads, s.v_heads, s.head_dim};
}

size_t KvCache::BytesPerToken(const ModelConfig& config, DType dtype) {
  return KvBytesPerToken(KvLayerShapes(config), dtype);
}

}  // namespace kvfold
