#include "server/cli/engine_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"

ABSL_FLAG(std::string, kv_cache_memory, "",
          "KV cache budget, all layers (bytes; 512MiB, 2GiB and 1e9 are accepted; empty: 512MiB "
          "on CPU, what --gpu-memory-utilization leaves on a GPU). Under tensor "
          "parallelism it is each rank's budget for its own KV heads (like vLLM's per-GPU "
          "memory), so N ranks hold N times the bytes and the blocks count at a rank's bytes "
          "per token");
ABSL_FLAG(std::string, kv_cache_dtype, "auto", "KV cache element type: auto (bf16), f32 or bf16");
ABSL_FLAG(int, block_size, 16, "Tokens per KV cache block");
ABSL_FLAG(int, max_num_seqs, 256, "Most sequences in one engine step");
ABSL_FLAG(int, max_num_batched_tokens, 2048,
          "Most tokens in one engine step (longer prompts are prefilled in chunks)");
ABSL_FLAG(double, gpu_memory_utilization, 0.9,
          "With --device cuda: the fraction of the GPU's memory kvfold may use (weights, "
          "activations and the KV pool, which gets the rest); ignored when --kv-cache-memory is "
          "given");
ABSL_FLAG(int, max_model_len, 0, "Most tokens per sequence, prompt and output (0: the model's)");

namespace kvfold::cli {

absl::StatusOr<CacheConfig> CacheConfigFromFlags() {
  CacheConfig c;
  const std::string memory = absl::GetFlag(FLAGS_kv_cache_memory);
  absl::StatusOr<int64_t> bytes = memory.empty() ? c.memory_bytes : ParseByteSize(memory);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--kv-cache-memory: %s", bytes.status().message()));
  }
  c.memory_bytes = *bytes;
  absl::StatusOr<DType> dtype = ParseKvCacheDtype(absl::GetFlag(FLAGS_kv_cache_dtype));
  if (!dtype.ok()) return dtype.status();
  c.kv_dtype = *dtype;
  c.block_size = absl::GetFlag(FLAGS_block_size);
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

bool KvCacheMemoryGiven() { return !absl::GetFlag(FLAGS_kv_cache_memory).empty(); }

absl::StatusOr<SchedulerConfig> SchedulerConfigFromFlags(const ModelConfig& model) {
  SchedulerConfig c;
  c.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  c.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  c.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  if (c.max_model_len == 0) c.max_model_len = model.MaxContext();
  if (c.max_model_len < 0 || c.max_model_len > model.MaxContext()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--max-model-len %d is outside [1, %d] (the model's context)",
                        c.max_model_len, model.MaxContext()));
  }
  c.eos_token_ids.assign(model.eos_token_ids.begin(), model.eos_token_ids.end());
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

}  // namespace kvfold::cli
