// Flags of every command that runs the engine (`generate --prompts-file` now, `serve` later), and
// the configs built from them once in main.
#pragma once

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "scheduler/scheduler.h"
#include "worker/cache_config.h"
#include "worker/model_config.h"

ABSL_DECLARE_FLAG(std::string, kv_cache_memory);
ABSL_DECLARE_FLAG(std::string, kv_cache_dtype);
ABSL_DECLARE_FLAG(int, block_size);
ABSL_DECLARE_FLAG(int, max_num_seqs);
ABSL_DECLARE_FLAG(int, max_num_batched_tokens);
ABSL_DECLARE_FLAG(int, max_model_len);
ABSL_DECLARE_FLAG(double, gpu_memory_utilization);

namespace kvfold::cli {

// memory_bytes is --kv-cache-memory, or 512MiB when it is not given (on a GPU the memory plan
// replaces it: gpu_memory_setup.h).
absl::StatusOr<CacheConfig> CacheConfigFromFlags();
bool KvCacheMemoryGiven();
// max_model_len 0 means the model's MaxContext(); larger than that is an error.
absl::StatusOr<SchedulerConfig> SchedulerConfigFromFlags(const ModelConfig& model);

}  // namespace kvfold::cli
