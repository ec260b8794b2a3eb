// The bytes of the paged KV cache: per layer, K and V arrays indexed by the same block ids. The
// scheduler hands out block ids; the worker owns the memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/ops.h"
#include "worker/attention_plan.h"
#include "worker/model_config.h"

namespace kvfold {

// What one layer stores per token: full layers K and V of every KV head; folded layers fewer K
// heads, or nothing (attention plans).
struct KvLayerShape {
  int k_heads = 0;
  int v_heads = 0;
  int head_dim = 0;
  bool operator==(const KvLayerShape&) const = default;
};

// One entry per layer of `config`, every layer full.
std::vector<KvLayerShape> KvLayerShapes(const ModelConfig& config);
// One entry per layer under `plan` (validated against `config`): full: K and V of every KV head;
// share: V only; cluster: K of `clusters` representative heads, V of all; drop and kv_from:
// nothing (a kv_from layer reads its source layer's arrays).
std::vector<KvLayerShape> KvLayerShapes(const ModelConfig& config, const AttentionPlan& plan);

// Σ_layers (k_heads + v_heads) · head_dim · dtype bytes: the one place this formula lives.
size_t KvBytesPerToken(absl::Span<const KvLayerShape> layers, DType dtype);

class KvCache {
 public:
  // num_blocks blocks of block_size tokens for each layer shaped by `shapes`, on `ops`'s device,
  // with K/V stored as `dtype` (F32 or BF16). A pool the device cannot hold is RESOURCE_EXHAUSTED
  // (naming the bytes wanted and free); bad arguments are INVALID_ARGUMENT.
  static absl::StatusOr<KvCache> Create(Ops& ops, std::vector<KvLayerShape> shapes,
                                        int32_t num_blocks, int32_t block_size,
                                        DType dtype = DType::kF32);
  // The constructors CHECK-fail where Create returns an error (tests, tools with known sizes).
  // num_blocks blocks of block_size tokens for every layer of `config`.
  KvCache(Ops& ops, const ModelConfig& config, int32_t num_blocks, int32_t block_size,
          DType dtype = DType::kF32);
  // The same with each layer shaped by `shapes` (KvLayerShapes(config, plan)). A layer storing
  // no K (or nothing) gets an empty k (and v) view and allocates nothing.
  KvCache(Ops& ops, std::vector<KvLayerShape> shapes, int32_t num_blocks, int32_t block_size,
          DType dtype = DType::kF32);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  DType dtype() const { return dtype_; }
  int num_layers() const { return static_cast<int>(shapes_.size()); }
  KvCacheLayer layer(int index) const;
  const std::vector<KvLayerShape>& shapes() const { return shapes_; }
  // Bytes one token occupies across all layers, unfolded and under `plan`.
  static size_t BytesPerToken(const ModelConfig& config, DType dtype);
  static size_t BytesPerToken(const ModelConfig& config, const AttentionPlan& plan, DType dtype);

 private:
  KvCache(std::vector<KvLayerShape> shapes, int32_t num_blocks, int32_t block_size, DType dtype)
      : num_blocks_(num_blocks),
        block_size_(block_size),
        dtype_(dtype),
        shapes_(std::move(shapes)) {}
  // Checks the arguments and allocates every layer's arrays.
  absl::Status Allocate(Ops& ops);

  int32_t num_blocks_;
  int32_t block_size_;
  DType dtype_;
  std::vector<KvLayerShape> shapes_;
  std::vector<Tensor> k_;
  std::vector<Tensor> v_;
};

}  // namespace kvfold
