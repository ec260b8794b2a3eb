#include "server/cli/attention_plan_setup.h"

#include <algorithm>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "server/cli/common_flags.h"
#include "worker/kv_cache.h"
#include "worker/tensor_parallel.h"

namespace kvfold::cli {

absl::StatusOr<AttentionPlan> AttentionPlanFromFlags(const WeightSource& weights) {
  const std::string path = absl::GetFlag(FLAGS_attention_plan);
  if (path.empty()) return FullAttentionPlan(weights.config());
  absl::StatusOr<std::string> fingerprint = ModelFingerprint(weights.config(), weights);
  if (!fingerprint.ok()) return fingerprint.status();
  return LoadAttentionPlan(path, weights.config(), *fingerprint);
}

std::string KvMemoryLine(const LlamaModel& model, const std::string& plan_name, DType kv_dtype,
                         int32_t num_blocks, int32_t block_size, int32_t max_model_len,
                         int64_t memory_bytes) {
  const ModelConfig& config = model.config();
  const AttentionPlan& plan = model.plan();
  const TensorParallel& tp = model.tensor_parallel();
  const size_t bytes = KvBytesPerToken(model.kv_layer_shapes(), kv_dtype);
  const size_t unfolded = KvCache::BytesPerToken(ShardConfig(config, tp), kv_dtype);
  const int64_t folded_layers =
      std::count_if(plan.layers.begin(), plan.layers.end(),
                    [](const LayerPlan& l) { return l.mode != AttentionMode::kFull; });
  std::string line =
      absl::StrFormat("kv: plan %s (%d of %d layers folded): %d bytes/token, unfolded %d (%+.1f%%)",
                      plan_name.empty() ? "none" : plan_name, folded_layers, config.num_layers,
                      bytes, unfolded, 100.0 * (static_cast<double>(bytes) - unfolded) / unfolded);
  if (tp.size > 1) absl::StrAppendFormat(&line, " per rank (tensor-parallel size %d)", tp.size);
  if (num_blocks == 0) return line;
  const int64_t blocks_per_seq = (int64_t{max_model_len} + block_size - 1) / block_size;
  // The same budget holding unfolded blocks (the pool's own bytes round down below it).
  const int64_t unfolded_blocks = memory_bytes / (int64_t{block_size} * unfolded);
  absl::StrAppendFormat(
      &line, "; pool %d blocks x %d tokens = %d sequences of %d tokens (unfolded %d)", num_blocks,
      block_size, num_blocks / blocks_per_seq, max_model_len, unfolded_blocks / blocks_per_seq);
  return line;
}

}  // namespace kvfold::cli
