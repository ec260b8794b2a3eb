// The bytes of the paged KV cache: per layer, K and V arrays indexed by the same block ids. The
// scheduler hands out block ids; the worker owns the memory.
#pragma once

#include <vector>

#include "kernels/ops.h"
#include "worker/model_config.h"

namespace kvfold {

class KvCache {
 public:
  // num_blocks blocks of block_size tokens for every layer of `config`, on `ops`'s device.
  KvCache(Ops& ops, const ModelConfig& config, int32_t num_blocks, int32_t block_size);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  KvCacheLayer layer(int index) const;
  // Bytes one token occupies across all layers.
  static size_t BytesPerToken(const ModelConfig& config, DType dtype);

 private:
  int32_t num_blocks_;
  int32_t block_size_;
  int32_t num_kv_heads_;
  int32_t head_dim_;
  std::vector<Tensor> k_;
  std::vector<Tensor> v_;
};

}  // namespace kvfold
