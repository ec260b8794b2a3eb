#include "server/cli/common_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "",
          "Model folder (Hugging Face layout: config.json + safetensors + tokenizer.json); empty: "
          "the default model");
ABSL_FLAG(int, threads, 0, "CPU threads for the model (0: every core)");
ABSL_FLAG(std::string, attention_plan, "",
          "Attention plan (JSON) folding some layers' attention: share, cluster, drop, kv_from; "
          "empty: every layer full");
ABSL_FLAG(bool, enforce_eager, false,
          "--device cuda: run every step op by op, without capturing decode steps as CUDA graphs "
          "(vLLM's flag)");
ABSL_FLAG(std::string, device, "cpu",
          "Where the model runs: cpu, or cuda (GPU 0; the KV pool is sized by "
          "--gpu-memory-utilization unless --kv-cache-memory is given)");
