#include "server/cli/gpu_memory_setup.h"

#include <algorithm>
#include <iostream>
#include <numeric>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "server/cli/device_setup.h"
#include "server/cli/engine_flags.h"
#include "worker/gpu_memory_plan.h"
#include "worker/kv_cache.h"
#include "worker/status_macros.h"

namespace kvfold::cli {

absl::Status RunProfilingForward(LlamaModel& model, Ops& ops, const SchedulerConfig& scheduler,
                                 const CacheConfig& cache) {
  const int32_t len = scheduler.max_model_len;
  const int32_t bs = cache.block_size;
  if (len < 1 || bs < 1) return absl::InvalidArgumentError("profiling: empty model length");
  const int32_t blocks_per_seq = (len + bs - 1) / bs;
  const int64_t tokens =
      std::min<int64_t>(scheduler.max_num_batched_tokens, int64_t{scheduler.max_num_seqs} * len);
  ForwardBatchArrays step;
  step.query_start = {0};
  step.max_blocks_per_seq = blocks_per_seq;
  int32_t next_block = 1;  // block 0 stands in for every position a chunk only reads
  for (int64_t remaining = tokens; remaining > 0;) {
    const int32_t q = static_cast<int32_t>(std::min<int64_t>(remaining, len));
    const int32_t first = len - q;
    const size_t table = step.block_tables.size();
    for (int32_t b = 0; b < blocks_per_seq; ++b) {
      step.block_tables.push_back((b + 1) * bs > first ? next_block++ : 0);
    }
    for (int32_t pos = first; pos < len; ++pos) {
      step.token_ids.push_back(0);
      step.positions.push_back(pos);
      step.slot_mapping.push_back(int64_t{step.block_tables[table + pos / bs]} * bs + pos % bs);
    }
    step.context_len.push_back(len);
    step.query_start.push_back(step.query_start.back() + q);
    remaining -= q;
  }
  step.logits_rows.resize(step.token_ids.size());
  std::iota(step.logits_rows.begin(), step.logits_rows.end(), 0);
  KVFOLD_ASSIGN_OR_RETURN(const KvCache kv, KvCache::Create(ops, model.kv_layer_shapes(),
                                                            next_block, bs, cache.kv_dtype));
  std::vector<float> logits(step.logits_rows.size() *
                            static_cast<size_t>(model.config().vocab_size));
  return model.Forward(step.View(), kv, logits.data());
}

absl::StatusOr<CacheConfig> PlanGpuKvCache(LlamaModel& model, Ops& ops, CacheConfig cache,
                                           const SchedulerConfig& scheduler,
                                           const GpuKvSizing& sizing) {
  KVFOLD_ASSIGN_OR_RETURN(const DeviceMemory before, QueryDeviceMemory(sizing.cuda_ordinal));
  KVFOLD_RETURN_IF_ERROR(RunProfilingForward(model, ops, scheduler, cache));
  // The profiling cache is gone; the workspaces it grew stay.
  KVFOLD_ASSIGN_OR_RETURN(const DeviceMemory after, QueryDeviceMemory(sizing.cuda_ordinal));

  const int64_t bytes_per_token =
      static_cast<int64_t>(KvBytesPerToken(model.kv_layer_shapes(), cache.kv_dtype));
  if (bytes_per_token == 0) {
    return absl::InvalidArgumentError(
        "the attention plan stores no K/V in any layer, so the KV pool has no size");
  }
  GpuMemoryPlanInput in;
  in.total_bytes = after.total_bytes;
  in.free_bytes = after.free_bytes;
  in.weight_bytes = sizing.weight_bytes;
  in.activation_bytes = std::max<int64_t>(0, before.free_bytes - after.free_bytes);
  in.utilization = sizing.utilization;
  in.kv_cache_bytes = sizing.kv_cache_memory_given ? cache.memory_bytes : 0;
  in.bytes_per_block = bytes_per_token * cache.block_size;
  const int32_t blocks_per_seq =
      (scheduler.max_model_len + cache.block_size - 1) / cache.block_size;
  in.min_blocks = blocks_per_seq;
  // cudaMalloc rounds each allocation up to 2 MiB: one K and one V array per layer.
  in.headroom_bytes = int64_t{2 << 20} * 2 * static_cast<int64_t>(model.kv_layer_shapes().size());
  KVFOLD_ASSIGN_OR_RETURN(const GpuMemoryPlan plan, PlanGpuMemory(in));
  std::cerr << absl::StrFormat(
                   "gpu memory: total %s (%s), weights %s, activations %s, other %s; KV pool "
                   "%s = %d blocks of %d tokens, %d sequences at max_model_len %d",
                   FormatBytes(in.total_bytes),
                   sizing.kv_cache_memory_given
                       ? std::string("--kv-cache-memory")
                       : absl::StrFormat("utilization %.2f", in.utilization),
                   FormatBytes(in.weight_bytes), FormatBytes(in.activation_bytes),
                   FormatBytes(plan.other_bytes), FormatBytes(plan.kv_pool_bytes), plan.num_blocks,
                   cache.block_size, plan.num_blocks / blocks_per_seq, scheduler.max_model_len)
            << std::endl;
  cache.memory_bytes = plan.kv_pool_bytes;
  return cache;
}

absl::StatusOr<CacheConfig> EngineCacheConfig(LoadedModel& loaded,
                                              const SchedulerConfig& scheduler) {
  KVFOLD_ASSIGN_OR_RETURN(CacheConfig cache, CacheConfigFromFlags());
  if (loaded.device != Device::kCuda) return cache;
  GpuKvSizing sizing;
  sizing.cuda_ordinal = loaded.cuda_ordinal;
  sizing.weight_bytes = loaded.weight_bytes;
  sizing.utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  sizing.kv_cache_memory_given = KvCacheMemoryGiven();
  return PlanGpuKvCache(*loaded.model, *loaded.ops, cache, scheduler, sizing);
}

}  // namespace kvfold::cli
