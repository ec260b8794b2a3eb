#include "worker/kv_cache.h"

namespace kvfold {

std::vector<KvLayerShape> KvLayerShapes(const ModelConfig& config) {
  return std::vector<KvLayerShape>(config.num_layers,
                                   {config.num_kv_heads, config.num_kv_heads, config.head_dim});
}

std::vector<KvLayerShape> KvLayerShapes(const ModelConfig& config, const AttentionPlan& plan) {
  if (plan.layers.empty()) return KvLayerShapes(config);  // the implicit all-full plan
  CHECK_EQ(static_cast<int>(plan.layers.size()), config.num_layers) << "plan not validated";
  const int kv = config.num_kv_heads, d = config.head_dim;
  std::vector<KvLayerShape> shapes;
  for (const LayerPlan& l : plan.layers) {
    switch (l.mode) {
      case AttentionMode::kFull:
        shapes.push_back({kv, kv, d});
        break;
      case AttentionMode::kShare:
        shapes.push_back({0, kv, d});
        break;
      case AttentionMode::kCluster:
        shapes.push_back({l.clusters, kv, d});
        break;
      case AttentionMode::kDrop:
      case AttentionMode::kKvFrom:
        shapes.push_back({0, 0, d});
        break;
    }
  }
  return shapes;
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
    : KvCache(ops, KvLayerShapes(config), num_blocks, block_size, dtype) {}

KvCache::KvCache(Ops& ops, std::vector<KvLayerShape> shapes, int32_t num_blocks, int32_t block_size,
                 DType dtype)
    : num_blocks_(num_blocks), block_size_(block_size), dtype_(dtype), shapes_(std::move(shapes)) {
  CHECK_GT(num_blocks, 0);
  CHECK_GT(block_size, 0);
  CHECK(dtype == DType::kF32 || dtype == DType::kBF16)
      << "KV cache dtype " << DTypeName(dtype) << " is not F32 or BF16";
  const int64_t slots = static_cast<int64_t>(num_blocks) * block_size;
  // An array a layer does not store stays an empty tensor.
  auto allocate = [&](int heads, int head_dim) {
    return heads == 0 ? Tensor() : ops.Allocate(dtype, slots, int64_t{heads} * head_dim);
  };
  for (const KvLayerShape& s : shapes_) {
    CHECK(s.k_heads >= 0 && s.v_heads >= 0 && s.head_dim > 0);
    k_.push_back(allocate(s.k_heads, s.head_dim));
    v_.push_back(allocate(s.v_heads, s.head_dim));
  }
}

KvCacheLayer KvCache::layer(int index) const {
  const KvLayerShape& s = shapes_[index];
  const TensorView empty{nullptr, dtype_, 0, 0};
  return {s.k_heads > 0 ? k_[index].view() : empty,
          s.v_heads > 0 ? v_[index].view() : empty,
          block_size_,
          s.k_heads,
          s.v_heads,
          s.head_dim};
}

size_t KvCache::BytesPerToken(const ModelConfig& config, DType dtype) {
  return KvBytesPerToken(KvLayerShapes(config), dtype);
}

size_t KvCache::BytesPerToken(const ModelConfig& config, const AttentionPlan& plan, DType dtype) {
  return KvBytesPerToken(KvLayerShapes(config, plan), dtype);
}

}  // namespace kvfold
