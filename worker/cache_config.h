// How big the paged KV pool is and what it stores: `--kv-cache-memory`, `--kv-cache-dtype`,
// `--block-size`. Built once in main; the pool's block count follows from it and the model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace kvfold {

struct CacheConfig {
  int64_t memory_bytes = int64_t{512} << 20;  // the KV budget, all layers
  DType kv_dtype = DType::kBF16;
  int32_t block_size = 16;  // tokens per block
  absl::Status Validate() const;
};

// "512MiB", "2GiB", "64KB", "1e9", "1000000": a positive byte count. Decimal suffixes (K, M, G,
// T, optionally with B) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024; case is
// ignored; fractions are rounded down to whole bytes.
absl::StatusOr<int64_t> ParseByteSize(std::string_view text);

// "auto" (BF16), "f32", "bf16" (also "float32", "bfloat16").
absl::StatusOr<DType> ParseKvCacheDtype(std::string_view text);

// Blocks the budget holds at `bytes_per_token`. InvalidArgument when the pool could not hold
// one sequence of max_model_len tokens (no request of that length could ever run) or more
// blocks than a block id can name.
absl::StatusOr<int32_t> NumKvBlocks(const CacheConfig& config, size_t bytes_per_token,
                                    int32_t max_model_len);

}  // namespace kvfold
