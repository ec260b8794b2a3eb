#include "worker/gpu_memory_plan.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace kvfold {

std::string FormatBytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (std::abs(b) >= double{1 << 30}) return absl::StrFormat("%.2f GiB", b / (1 << 30));
  if (std::abs(b) >= double{1 << 20}) return absl::StrFormat("%.2f MiB", b / (1 << 20));
  if (std::abs(b) >= double{1 << 10}) return absl::StrFormat("%.2f KiB", b / (1 << 10));
  return absl::StrFormat("%d B", bytes);
}

absl::StatusOr<GpuMemoryPlan> PlanGpuMemory(const GpuMemoryPlanInput& in) {
  if (in.total_bytes <= 0 || in.free_bytes < 0 || in.free_bytes > in.total_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "device memory query gave %d bytes free of %d", in.free_bytes, in.total_bytes));
  }
  if (!(in.utilization > 0.0 && in.utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--gpu-memory-utilization %g is outside (0, 1]", in.utilization));
  }
  if (in.bytes_per_block <= 0 || in.min_blocks < 1 || in.weight_bytes < 0 ||
      in.activation_bytes < 0 || in.kv_cache_bytes < 0 || in.headroom_bytes < 0) {
    return absl::InvalidArgumentError("GPU memory plan: negative sizes or an empty KV block");
  }
  GpuMemoryPlan plan;
  const int64_t in_use = in.total_bytes - in.free_bytes;
  plan.other_bytes = std::max<int64_t>(0, in_use - in.weight_bytes - in.activation_bytes);
  const int64_t needed = int64_t{in.min_blocks} * in.bytes_per_block;
  const int64_t usable = std::max<int64_t>(0, in.free_bytes - in.headroom_bytes);
  int64_t kv = 0;
  if (in.kv_cache_bytes > 0) {
    if (in.kv_cache_bytes > usable) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "--kv-cache-memory %s is more than the %s free on the device after the weights (%s) "
          "and activations (%s)",
          FormatBytes(in.kv_cache_bytes), FormatBytes(usable), FormatBytes(in.weight_bytes),
          FormatBytes(in.activation_bytes)));
    }
    kv = in.kv_cache_bytes;
  } else {
    const int64_t budget =
        static_cast<int64_t>(std::floor(in.utilization * static_cast<double>(in.total_bytes)));
    kv = std::min(budget - in_use, usable);
    if (kv < needed) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "GPU memory: %g of %s is %s; weights %s, activations %s and %s else in use leave %s "
          "for the KV cache, less than the %s (%d blocks) one sequence of --max-model-len needs; "
          "raise --gpu-memory-utilization or lower --max-model-len / --max-num-batched-tokens",
          in.utilization, FormatBytes(in.total_bytes), FormatBytes(budget),
          FormatBytes(in.weight_bytes), FormatBytes(in.activation_bytes),
          FormatBytes(plan.other_bytes), FormatBytes(std::max<int64_t>(kv, 0)), FormatBytes(needed),
          in.min_blocks));
    }
  }
  const int64_t blocks = kv / in.bytes_per_block;
  if (blocks < in.min_blocks) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "--kv-cache-memory %s holds %d KV blocks, fewer than the %d one sequence of "
        "--max-model-len needs (%s)",
        FormatBytes(kv), blocks, in.min_blocks, FormatBytes(needed)));
  }
  plan.num_blocks =
      static_cast<int32_t>(std::min<int64_t>(blocks, std::numeric_limits<int32_t>::max()));
  plan.kv_pool_bytes = int64_t{plan.num_blocks} * in.bytes_per_block;
  return plan;
}

}  // namespace kvfold
