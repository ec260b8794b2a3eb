#include "worker/kv_cache.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/status_macros.h"

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
    : KvCache(std::move(shapes), num_blocks, block_size, dtype) {
  const absl::Status allocated = Allocate(ops);
  CHECK(allocated.ok()) << allocated;
}

absl::StatusOr<KvCache> KvCache::Create(Ops& ops, std::vector<KvLayerShape> shapes,
                                        int32_t num_blocks, int32_t block_size, DType dtype) {
  KvCache cache(std::move(shapes), num_blocks, block_size, dtype);
  KVFOLD_RETURN_IF_ERROR(cache.Allocate(ops));
  return cache;
}

absl::Status KvCache::Allocate(Ops& ops) {
  if (num_blocks_ <= 0 || block_size_ <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache of ", num_blocks_, " blocks of ", block_size_, " tokens"));
  }
  if (dtype_ != DType::kF32 && dtype_ != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache dtype ", std::string(DTypeName(dtype_)), " is not F32 or BF16"));
  }
  const int64_t slots = static_cast<int64_t>(num_blocks_) * block_size_;
  for (const KvLayerShape& s : shapes_) {
    if (s.k_heads < 0 || s.v_heads < 0 || s.head_dim <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("KV cache layer of ", s.k_heads, " K and ",
                                                     s.v_heads, " V heads of ", s.head_dim));
    }
  }
  const size_t pool_bytes = KvBytesPerToken(shapes_, dtype_) * static_cast<size_t>(slots);
  // An array a layer does not store stays an empty tensor.
  auto allocate = [&](int heads, int head_dim) -> absl::StatusOr<Tensor> {
    if (heads == 0) return Tensor();
    absl::StatusOr<Tensor> array = ops.TryAllocate(dtype_, slots, int64_t{heads} * head_dim);
    if (array.ok()) return array;
    return absl::Status(array.status().code(),
                        absl::StrCat("KV cache of ", num_blocks_, " blocks (", pool_bytes,
                                     " bytes in all): ", array.status().message()));
  };
  for (const KvLayerShape& s : shapes_) {
    KVFOLD_ASSIGN_OR_RETURN(Tensor k, allocate(s.k_heads, s.head_dim));
    KVFOLD_ASSIGN_OR_RETURN(Tensor v, allocate(s.v_heads, s.head_dim));
    k_.push_back(std::move(k));
    v_.push_back(std::move(v));
  }
  return absl::OkStatus();
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
