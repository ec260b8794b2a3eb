// Sizes the KV pool of an engine running on a GPU, in vLLM's order: the weights are already
// loaded (LoadModel measured them); one forward of the scheduler's largest step over a minimal KV
// cache leaves the activation peak allocated (the model's workspaces and the ops' scratch only
// grow); the pool gets what --gpu-memory-utilization leaves (worker/gpu_memory_plan.h), unless
// --kv-cache-memory names its size. Prints one `gpu memory:` line on stderr.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "scheduler/scheduler.h"
#include "server/cli/model_setup.h"
#include "worker/cache_config.h"
#include "worker/llama_model.h"

namespace kvfold::cli {

struct GpuKvSizing {
  int cuda_ordinal = 0;
  int64_t weight_bytes = 0;            // device memory the weights took
  double utilization = 0.9;            // --gpu-memory-utilization
  bool kv_cache_memory_given = false;  // --kv-cache-memory: `cache.memory_bytes` is the pool
};

// `cache` with memory_bytes set to the planned pool (whole blocks).
absl::StatusOr<CacheConfig> PlanGpuKvCache(LlamaModel& model, Ops& ops, CacheConfig cache,
                                           const SchedulerConfig& scheduler,
                                           const GpuKvSizing& sizing);

// The engine's KV pool for `loaded`: CacheConfigFromFlags(), planned by PlanGpuKvCache from
// --gpu-memory-utilization / --kv-cache-memory when the model runs on a GPU.
absl::StatusOr<CacheConfig> EngineCacheConfig(LoadedModel& loaded,
                                              const SchedulerConfig& scheduler);

// One forward of the largest step the scheduler can make under `scheduler`: every batched token,
// as the tails of sequences at max_model_len (so attention spans the longest context), every row
// asking for logits (prompt logprobs can). Its K/V go to a cache of just the blocks those tokens
// write; earlier positions all read one shared block.
absl::Status RunProfilingForward(LlamaModel& model, Ops& ops, const SchedulerConfig& scheduler,
                                 const CacheConfig& cache);

}  // namespace kvfold::cli
