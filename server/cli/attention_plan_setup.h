// `--attention-plan`: loading the plan for the model just opened, and the start-up line that says
// what the plan saves in KV memory.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/attention_plan.h"
#include "worker/llama_model.h"
#include "worker/model_config.h"
#include "worker/weight_source.h"

namespace kvfold::cli {

// The plan --attention-plan names, checked against `weights` (its fingerprint is computed here);
// the implicit all-full plan when the flag is empty.
absl::StatusOr<AttentionPlan> AttentionPlanFromFlags(const WeightSource& weights);

// "kv: plan P (3 of 5 layers folded): 640 bytes/token, unfolded 1280 (-50.0%); pool 64 blocks x
// 16 tokens = 4 sequences of 256 tokens (unfolded 2)": the KV cost of the plan and how many
// full-length sequences the pool holds, with and without it in the same `memory_bytes` budget
// (num_blocks 0: no pool part).
// Under tensor parallelism the bytes are one rank's (its KV heads), as is the budget, and the
// line says so.
std::string KvMemoryLine(const LlamaModel& model, const std::string& plan_name, DType kv_dtype,
                         int32_t num_blocks, int32_t block_size, int32_t max_model_len,
                         int64_t memory_bytes = 0);

}  // namespace kvfold::cli
