// How much of a GPU the KV pool gets, in vLLM's order: the weights are loaded and one forward of
// the largest step has run (its activations stay allocated: the workspaces only grow), then the
// pool takes what `--gpu-memory-utilization` leaves of the device, unless `--kv-cache-memory`
// names a size. Pure arithmetic, so it is tested without a GPU.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace kvfold {

struct GpuMemoryPlanInput {
  int64_t total_bytes = 0;  // the device's memory (cudaMemGetInfo)
  // Free once the weights are loaded and the profiling forward ran (cudaMemGetInfo). What is in
  // use then (total - free) is the weights, the activation peak, the CUDA context and cuBLAS
  // workspaces, and any other process on the device: all of it counts against the budget.
  int64_t free_bytes = 0;
  int64_t weight_bytes = 0;      // measured around the weights' upload (for the report)
  int64_t activation_bytes = 0;  // measured around the profiling forward (for the report)
  double utilization = 0.9;      // the fraction of total_bytes kvfold may use, in (0, 1]
  int64_t kv_cache_bytes = 0;    // > 0: an explicit --kv-cache-memory, instead of utilization
  int64_t bytes_per_block = 0;   // one KV block, every layer
  int32_t min_blocks = 1;        // one sequence at max_model_len
  // Kept free whatever the utilization: cudaMalloc rounds each of the pool's per-layer arrays up.
  int64_t headroom_bytes = 0;
};

struct GpuMemoryPlan {
  int64_t kv_pool_bytes = 0;  // num_blocks whole blocks
  int32_t num_blocks = 0;
  int64_t other_bytes = 0;  // in use beyond weights and activations (context, other processes)
};

// The pool, or InvalidArgument/ResourceExhausted with the numbers when it cannot hold min_blocks
// (or an explicit size is more than is free).
absl::StatusOr<GpuMemoryPlan> PlanGpuMemory(const GpuMemoryPlanInput& in);

// "1.50 GiB": bytes for the `gpu memory:` log line and errors.
std::string FormatBytes(int64_t bytes);

}  // namespace kvfold
