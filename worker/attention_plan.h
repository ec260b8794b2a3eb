// Attention plans: per layer, how its attention is folded (../shared/ATTENTION.md). A plan is a
// JSON file beside the model, calibrated for one model (its fingerprint):
//   {"version": 1, "model_fingerprint": "<hex>", "layers": [
//     {"mode": "full"},
//     {"mode": "share", "from": 0, "align": [1, 0, 2, 3]},
//     {"mode": "cluster", "clusters": 2, "window": 5, "static_map": [0, 0, 2, 2]},
//     {"mode": "drop", "bias": "plan.safetensors:beta.3"},
//     {"mode": "kv_from", "from": 0}]}
// Fields other than those a layer's mode takes are errors (a misspelt field never silently
// changes what runs). Plain data once loaded; the model and the KV cache read it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model_config.h"
#include "worker/weight_source.h"

namespace kvfold {

enum class AttentionMode { kFull, kShare, kCluster, kDrop, kKvFrom };

// "full", "share", "cluster", "drop", "kv_from": the names the JSON uses.
std::string_view AttentionModeName(AttentionMode mode);

struct LayerPlan {
  AttentionMode mode = AttentionMode::kFull;
  // share: the earlier full layer whose probabilities it reuses; kv_from: the layer whose K/V it
  // reads.
  int32_t source = -1;
  // share: per query head h, the source query head feeding it; empty = identity.
  std::vector<int32_t> align;
  // cluster: number of clusters of KV heads (whole GQA groups are clustered).
  int32_t clusters = 0;
  // cluster: how many first tokens of a sequence decide its membership.
  int32_t window = 5;
  // cluster: per KV head, its cluster's representative KV head (lowest index in the cluster);
  // size num_kv_heads; used for every sequence until per-sequence membership exists.
  std::vector<int32_t> static_map;
  // drop: optional calibrated beta (hidden_size floats) added in place of the attention output.
  std::vector<float> bias;
  // drop: where `bias` came from, "file.safetensors:tensor" relative to the plan file, as the
  // plan spells it; AttentionPlanToJson writes it back (the writer saves the tensor itself).
  std::string bias_tensor;
};

struct AttentionPlan {
  std::string model_fingerprint;
  std::string id;  // hex SHA-256 of the plan file; empty for the implicit all-full plan
  std::vector<LayerPlan> layers;

  // True when any layer is not full (an all-full plan computes exactly what no plan does).
  bool folded() const;
  // Part of prefix-cache keys: 0 for an unfolded plan (its K/V equal the model's own), else
  // derived from id, so blocks cached under one folding are never reused under another.
  uint64_t cache_salt() const;
};

// Every layer full, no id: what a model runs without --attention-plan.
AttentionPlan FullAttentionPlan(const ModelConfig& config);

// Hex SHA-256 of the config's shape fields (layers, hidden, heads, KV heads, head_dim,
// intermediate, vocab) and the bytes of model.embed_tokens.weight as stored. Identifies the
// model a plan was calibrated for.
absl::StatusOr<std::string> ModelFingerprint(const ModelConfig& config,
                                             const WeightSource& weights);

// Hex SHA-256 of `bytes`.
std::string Sha256Hex(std::string_view bytes);

// Checks a plan against a model with tensor-parallel size `tp`: layer count, head counts, mode
// sources (a share reads an earlier full layer, a kv_from an earlier layer that stores K/V),
// cluster maps (each representative maps to itself and is its cluster's lowest index, `clusters`
// distinct representatives, no cluster crossing a shard of num_kv_heads / tp KV heads), bias
// length. Not the fingerprint (ParseAttentionPlan checks that). `source` names the plan in
// errors.
absl::Status ValidateAttentionPlan(const AttentionPlan& plan, const ModelConfig& config, int tp = 1,
                                   std::string_view source = "attention plan");

// Parses plan JSON `text` and validates it against the model: `source` names the file in
// errors, bias tensors are read relative to `base_dir`, and the plan's fingerprint must equal
// `model_fingerprint`. The id is the hash of `text`.
absl::StatusOr<AttentionPlan> ParseAttentionPlan(std::string_view text, std::string_view source,
                                                 const std::string& base_dir,
                                                 const ModelConfig& config,
                                                 std::string_view model_fingerprint, int tp = 1);

// Reads and parses the plan file at `path` (bias tensors relative to its folder).
absl::StatusOr<AttentionPlan> LoadAttentionPlan(const std::string& path, const ModelConfig& config,
                                                std::string_view model_fingerprint, int tp = 1);

// The plan as JSON in the schema above (without id, which is the hash of the text).
std::string AttentionPlanToJson(const AttentionPlan& plan);

}  // namespace kvfold
