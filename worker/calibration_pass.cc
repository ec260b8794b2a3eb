#include "worker/calibration_pass.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "worker/attention_stats.h"
#include "worker/forward_observer.h"
#include "worker/head_assignment.h"
#include "worker/head_clustering.h"
#include "worker/kv_cache.h"
#include "worker/lockstep_batch.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

std::vector<float> HostCopy(Ops& ops, const TensorView& view) {
  std::vector<float> out(static_cast<size_t>(view.numel()));
  ops.CopyToHost(view, out.data());
  return out;
}

// Collects one window's activations, then folds them into running sums.
class StatsObserver final : public ForwardObserver {
 public:
  StatsObserver(const ModelConfig& config, Ops& ops, const CalibrationPassOptions& options)
      : c_(config),
        ops_(ops),
        options_(options),
        drop_(config.num_layers),
        probs_(config.num_layers),
        similarity_(config.num_layers),
        chai_points_(config.num_layers) {
    for (int l = 0; l < c_.num_layers; ++l) {
      similarity_[l].assign(static_cast<size_t>(l) * c_.num_heads * c_.num_heads, 0.0);
    }
  }

  void OnAttention(const AttentionActivations& a) override {
    drop_[a.layer].Add(HostCopy(ops_, a.residual), HostCopy(ops_, a.output), c_.hidden_size);
    tokens_ = static_cast<int>(a.q.rows);
    probs_[a.layer] =
        CausalAttentionProbs(HostCopy(ops_, a.q), HostCopy(ops_, a.k), tokens_, c_.num_heads,
                             c_.num_kv_heads, c_.head_dim, 1.0f / std::sqrt(float(c_.head_dim)));
  }

  // After a window's forward pass: cross-layer similarities and CHAI features.
  void EndWindow() {
    const int h = c_.num_heads;
    for (int l = 0; l < c_.num_layers; ++l) {
      for (int s = 0; s < l; ++s) {
        const std::vector<double> sim = ProbabilitySimilarity(probs_[l], probs_[s], tokens_, h);
        double* sum = similarity_[l].data() + static_cast<size_t>(s) * h * h;
        for (int i = 0; i < h * h; ++i) sum[i] += sim[i];
      }
      if (tokens_ >= options_.chai_window) {
        const std::vector<float> f =
            ChaiFeatures(probs_[l], tokens_, h, c_.num_kv_heads, options_.chai_window);
        // Points are KV heads: append this window's features to each head's row.
        const size_t per_head = f.size() / c_.num_kv_heads;
        std::vector<std::vector<float>>& rows = chai_points_[l];
        rows.resize(c_.num_kv_heads);
        for (int g = 0; g < c_.num_kv_heads; ++g) {
          rows[g].insert(rows[g].end(), f.begin() + g * per_head, f.begin() + (g + 1) * per_head);
        }
      }
    }
    ++windows_;
  }

  CalibrationStats Finish() const {
    const int h = c_.num_heads, kv = c_.num_kv_heads;
    CalibrationStats stats;
    stats.drop_score.resize(c_.num_layers);
    stats.share.resize(c_.num_layers);
    stats.chai_clusters.assign(c_.num_layers, kv);
    stats.chai_map.resize(c_.num_layers);
    for (int l = 0; l < c_.num_layers; ++l) {
      stats.drop_score[l] = drop_[l].mean();
      for (int s = 0; s < l; ++s) {
        std::vector<double> sim(similarity_[l].begin() + static_cast<size_t>(s) * h * h,
                                similarity_[l].begin() + static_cast<size_t>(s + 1) * h * h);
        for (double& v : sim) v /= std::max(windows_, 1);
        CalibrationStats::Share share;
        share.source = s;
        share.align = MaxSimilarityAssignment(sim, h);
        for (int i = 0; i < h; ++i) share.similarity += sim[i * h + share.align[i]] / h;
        stats.share[l].push_back(std::move(share));
      }
      std::sort(stats.share[l].begin(), stats.share[l].end(),
                [](const auto& a, const auto& b) { return a.similarity > b.similarity; });
      if (static_cast<int>(stats.share[l].size()) > options_.share_sources) {
        stats.share[l].resize(options_.share_sources);
      }
      std::vector<int32_t> identity(kv);
      std::iota(identity.begin(), identity.end(), 0);
      stats.chai_map[l] = identity;
      if (chai_points_[l].empty()) continue;
      const int dim = static_cast<int>(chai_points_[l][0].size());
      std::vector<float> points;
      for (const std::vector<float>& row : chai_points_[l]) {
        points.insert(points.end(), row.begin(), row.end());
      }
      const int shard = kv / options_.tensor_parallel_size;
      std::vector<double> inertia;
      for (int k = 1; k <= kv; ++k) inertia.push_back(KMeansInertia(points, kv, dim, k));
      // At least one cluster per shard: a cluster never crosses one.
      const int clusters = std::max(KneeClusterCount(inertia), options_.tensor_parallel_size);
      stats.chai_clusters[l] = clusters;
      stats.chai_map[l] = AverageLinkageRepresentatives(points, kv, dim, clusters, shard);
    }
    return stats;
  }

 private:
  const ModelConfig& c_;
  Ops& ops_;
  const CalibrationPassOptions& options_;
  std::vector<DropScore> drop_;
  std::vector<std::vector<float>> probs_;        // this window's, per layer
  std::vector<std::vector<double>> similarity_;  // per layer l: l blocks of [H][H] sums
  std::vector<std::vector<std::vector<float>>> chai_points_;  // per layer, per KV head
  int tokens_ = 0;
  int windows_ = 0;
};

}  // namespace

absl::StatusOr<CalibrationStats> GatherCalibrationStats(
    LlamaModel& model, Ops& ops, absl::Span<const std::vector<int32_t>> windows,
    const CalibrationPassOptions& options, const std::function<void(int, int)>& progress) {
  const ModelConfig& c = model.config();
  if (windows.empty()) return absl::InvalidArgumentError("no calibration text");
  if (model.plan().folded()) {
    return absl::InvalidArgumentError("calibration measures the unfolded model; it has a plan");
  }
  if (options.tensor_parallel_size <= 0 || c.num_kv_heads % options.tensor_parallel_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor-parallel size ", options.tensor_parallel_size, " does not divide ",
                     c.num_kv_heads, " KV heads"));
  }
  size_t longest = 0;
  for (const std::vector<int32_t>& w : windows) longest = std::max(longest, w.size());
  constexpr int32_t kBlock = 16;
  const int32_t blocks = std::max(1, static_cast<int32_t>((longest + kBlock - 1) / kBlock));
  KvCache cache(ops, c, blocks, kBlock, DType::kF32);
  LockstepBatch batches(blocks, kBlock);
  StatsObserver observer(c, ops, options);
  model.set_observer(&observer);
  int done = 0;
  for (const std::vector<int32_t>& w : windows) {
    if (w.empty()) continue;
    const ForwardBatch batch = batches.Append(w, 0, LockstepBatch::Logits::kNone);
    absl::Status s = model.Forward(batch, cache, nullptr);
    if (!s.ok()) {
      model.set_observer(nullptr);
      return s;
    }
    observer.EndWindow();
    if (progress) progress(++done, static_cast<int>(windows.size()));
  }
  model.set_observer(nullptr);
  return observer.Finish();
}

}  // namespace kvfold
