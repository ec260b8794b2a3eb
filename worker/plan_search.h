// The greedy search of `kvfold calibrate` (ATTENTION.md "Calibration"): starting from the unfolded
// plan, repeatedly apply the candidate change with the lowest measured loss increase per KV byte
// saved, re-measuring held-out perplexity, until the tolerance or the KV target is reached. The
// model is behind two loss callbacks, so the search itself is tested without one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/attention_plan.h"
#include "worker/model_config.h"

namespace kvfold {

// What one calibration pass measured, per layer.
struct CalibrationStats {
  std::vector<double> drop_score;  // mean cos(x, x + attn(x)); higher: safer to drop
  struct Share {
    int32_t source = -1;         // an earlier layer
    std::vector<int32_t> align;  // best head permutation (source head per query head)
    double similarity = 0.0;     // mean probability cosine under that alignment
  };
  std::vector<std::vector<Share>> share;       // per layer, best sources first
  std::vector<int32_t> chai_clusters;          // knee cluster count (KV heads) per layer
  std::vector<std::vector<int32_t>> chai_map;  // static representative map at that count
};

struct PlanSearchOptions {
  double max_ppl_increase = 0.02;  // relative, on held-out text
  double target_kv_saving = 1.0;   // stop once this fraction of KV bytes/token is saved
  int candidates_per_kind = 2;     // measured per step for each of drop, share, cluster
  int max_rejections = 4;          // consecutive candidates over tolerance before giving up
  DType kv_dtype = DType::kBF16;
  int64_t kv_budget_bytes = 0;  // for the "sequences that fit" column
  int32_t sequence_tokens = 1024;
};

struct PlanSearchStep {
  std::string change;  // e.g. "layer 17: share from 16"
  size_t kv_bytes_per_token = 0;
  int64_t sequences_fit = 0;
  double calibration_loss = 0.0;  // mean NLL
  double heldout_ppl = 0.0;
  bool accepted = true;
};

struct PlanSearchResult {
  AttentionPlan plan;
  std::vector<PlanSearchStep> steps;  // steps[0] is the unfolded starting point
};

// Mean negative log-likelihood of some text under `plan`.
using PlanLoss = std::function<absl::StatusOr<double>(const AttentionPlan&)>;
// Called after each measured step (progress display).
using PlanSearchProgress = std::function<void(const PlanSearchStep&)>;

absl::StatusOr<PlanSearchResult> SearchAttentionPlan(const ModelConfig& config,
                                                     const CalibrationStats& stats,
                                                     const PlanLoss& calibration_loss,
                                                     const PlanLoss& heldout_loss,
                                                     const PlanSearchOptions& options,
                                                     const PlanSearchProgress& progress = nullptr);

}  // namespace kvfold
