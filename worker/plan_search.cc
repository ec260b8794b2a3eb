#include "worker/plan_search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "worker/kv_cache.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

struct Candidate {
  int32_t layer;
  LayerPlan change;
  std::string description;
};

size_t PlanBytes(const ModelConfig& config, const AttentionPlan& plan, DType dtype) {
  return KvBytesPerToken(KvLayerShapes(config, plan), dtype);
}

// A layer another layer reads (share or kv_from source) keeps its mode.
bool IsSource(const AttentionPlan& plan, int32_t layer) {
  return std::any_of(plan.layers.begin(), plan.layers.end(), [&](const LayerPlan& l) {
    return (l.mode == AttentionMode::kShare || l.mode == AttentionMode::kKvFrom) &&
           l.source == layer;
  });
}

// The best `k` candidates of each kind that change a `full` layer nobody reads, by the proxy each
// kind has: drop score, probability similarity, and depth for clusters (CHAI keeps early layers).
std::vector<Candidate> Candidates(const ModelConfig& config, const AttentionPlan& plan,
                                  const CalibrationStats& stats, int k,
                                  const std::set<std::string>& banned) {
  const int32_t n = config.num_layers;
  std::vector<std::pair<double, Candidate>> drops, shares, clusters;
  for (int32_t l = 0; l < n; ++l) {
    if (plan.layers[l].mode != AttentionMode::kFull || IsSource(plan, l)) continue;
    LayerPlan drop;
    drop.mode = AttentionMode::kDrop;
    drops.push_back({stats.drop_score[l], {l, drop, absl::StrCat("layer ", l, ": drop")}});
    if (l >= 2 && l < n - 1) {  // ATTENTION.md: never share layers 0-1 or the last
      for (const CalibrationStats::Share& s : stats.share[l]) {
        if (s.source < 0 || s.source >= l || plan.layers[s.source].mode != AttentionMode::kFull) {
          continue;
        }
        LayerPlan share;
        share.mode = AttentionMode::kShare;
        share.source = s.source;
        share.align = s.align;
        shares.push_back(
            {s.similarity, {l, share, absl::StrCat("layer ", l, ": share from ", s.source)}});
        break;  // the best available source only
      }
    }
    if (stats.chai_clusters[l] < config.num_kv_heads) {
      LayerPlan cluster;
      cluster.mode = AttentionMode::kCluster;
      cluster.clusters = stats.chai_clusters[l];
      cluster.static_map = stats.chai_map[l];
      clusters.push_back({static_cast<double>(l),
                          {l, cluster,
                           absl::StrCat("layer ", l, ": cluster ", cluster.clusters, " of ",
                                        config.num_kv_heads, " KV heads")}});
    }
  }
  std::vector<Candidate> out;
  for (auto* kind : {&drops, &shares, &clusters}) {
    std::stable_sort(kind->begin(), kind->end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    int taken = 0;
    for (auto& [proxy, c] : *kind) {
      if (taken == k) break;
      if (banned.count(c.description)) continue;
      out.push_back(std::move(c));
      ++taken;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<PlanSearchResult> SearchAttentionPlan(const ModelConfig& config,
                                                     const CalibrationStats& stats,
                                                     const PlanLoss& calibration_loss,
                                                     const PlanLoss& heldout_loss,
                                                     const PlanSearchOptions& options,
                                                     const PlanSearchProgress& progress) {
  const size_t n = static_cast<size_t>(config.num_layers);
  if (stats.drop_score.size() != n || stats.share.size() != n || stats.chai_clusters.size() != n ||
      stats.chai_map.size() != n) {
    return absl::InvalidArgumentError("calibration statistics do not cover every layer");
  }
  PlanSearchResult result;
  result.plan = FullAttentionPlan(config);
  const size_t unfolded = PlanBytes(config, result.plan, options.kv_dtype);
  auto make_step = [&](std::string change, const AttentionPlan& plan, double cal, double held) {
    PlanSearchStep step;
    step.change = std::move(change);
    step.kv_bytes_per_token = PlanBytes(config, plan, options.kv_dtype);
    if (step.kv_bytes_per_token > 0 && options.sequence_tokens > 0) {
      step.sequences_fit = options.kv_budget_bytes /
                           static_cast<int64_t>(step.kv_bytes_per_token * options.sequence_tokens);
    }
    step.calibration_loss = cal;
    step.heldout_ppl = std::exp(held);
    return step;
  };
  auto record = [&](PlanSearchStep step) {
    if (progress) progress(step);
    result.steps.push_back(std::move(step));
  };

  KVFOLD_ASSIGN_OR_RETURN(double current_loss, calibration_loss(result.plan));
  KVFOLD_ASSIGN_OR_RETURN(const double base_heldout, heldout_loss(result.plan));
  const double max_ppl = std::exp(base_heldout) * (1.0 + options.max_ppl_increase);
  record(make_step("unfolded", result.plan, current_loss, base_heldout));

  std::set<std::string> banned;
  int rejections = 0;
  while (rejections < options.max_rejections) {
    const size_t bytes = PlanBytes(config, result.plan, options.kv_dtype);
    if (unfolded > 0 &&
        1.0 - static_cast<double>(bytes) / unfolded >= options.target_kv_saving - 1e-12) {
      break;
    }
    std::vector<Candidate> candidates =
        Candidates(config, result.plan, stats, options.candidates_per_kind, banned);
    if (candidates.empty()) break;
    // Measure every candidate, then try them from the lowest loss increase per byte saved (a
    // change that lowers the loss first) until one keeps held-out perplexity within tolerance.
    struct Measured {
      double score, loss;
      size_t index;
      AttentionPlan plan;
    };
    std::vector<Measured> measured;
    for (size_t i = 0; i < candidates.size(); ++i) {
      AttentionPlan trial = result.plan;
      trial.layers[candidates[i].layer] = candidates[i].change;
      const size_t saved = bytes - PlanBytes(config, trial, options.kv_dtype);
      if (saved == 0) continue;
      KVFOLD_ASSIGN_OR_RETURN(const double loss, calibration_loss(trial));
      measured.push_back(
          {(loss - current_loss) / static_cast<double>(saved), loss, i, std::move(trial)});
    }
    if (measured.empty()) break;
    std::stable_sort(measured.begin(), measured.end(),
                     [](const Measured& a, const Measured& b) { return a.score < b.score; });
    for (Measured& m : measured) {
      if (rejections >= options.max_rejections) break;
      KVFOLD_ASSIGN_OR_RETURN(const double heldout, heldout_loss(m.plan));
      PlanSearchStep step = make_step(candidates[m.index].description, m.plan, m.loss, heldout);
      if (step.heldout_ppl > max_ppl) {
        step.accepted = false;
        banned.insert(candidates[m.index].description);
        ++rejections;
        record(std::move(step));
        continue;
      }
      rejections = 0;
      result.plan = std::move(m.plan);
      current_loss = m.loss;
      record(std::move(step));
      break;
    }
    // Whether one was kept or all were rejected (and banned), the next round's candidates differ.
  }
  return result;
}

}  // namespace kvfold
