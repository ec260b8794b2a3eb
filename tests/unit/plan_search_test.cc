// The calibration search over a model stand-in whose loss is a known sum of per-change costs, so
// the greedy order, the tolerance and the KV target can be checked exactly.
#include "worker/plan_search.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/kv_cache.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using ::testing::Field;

ModelConfig SixLayers() {
  ModelConfig c;
  c.num_layers = 6;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.hidden_size = 32;
  return c;
}

CalibrationStats Stats() {
  CalibrationStats s;
  s.drop_score = {0.1, 0.2, 0.3, 0.9, 0.8, 0.4};
  s.share.resize(6);
  for (int l = 1; l < 6; ++l) s.share[l] = {{std::max(l - 2, 0), {1, 0, 2, 3}, 0.5 + 0.05 * l}};
  s.chai_clusters = {2, 2, 2, 1, 1, 1};
  s.chai_map = {{0, 1}, {0, 1}, {0, 1}, {0, 0}, {0, 0}, {0, 0}};
  return s;
}

// Loss = 1 + the listed cost of every folded layer's change.
struct CostModel {
  std::map<std::string, double> cost;  // "drop 3", "share 4", "cluster 5"
  int calls = 0;
  double Loss(const AttentionPlan& plan) {
    ++calls;
    double loss = 1.0;
    for (size_t l = 0; l < plan.layers.size(); ++l) {
      const LayerPlan& p = plan.layers[l];
      std::string key;
      if (p.mode == AttentionMode::kDrop) key = "drop " + std::to_string(l);
      if (p.mode == AttentionMode::kShare) key = "share " + std::to_string(l);
      if (p.mode == AttentionMode::kCluster) key = "cluster " + std::to_string(l);
      if (!key.empty()) loss += cost.count(key) ? cost[key] : 1.0;
    }
    return loss;
  }
};

TEST(PlanSearchTest, GreedyByLossPerByteUntilTheTolerance) {
  const ModelConfig config = SixLayers();
  CostModel model;
  // Per layer, full stores 2 * 2 * 8 * 2 = 64 bytes; drop saves 64, share 32, cluster-to-1 16.
  model.cost = {{"drop 3", 0.0064},
                {"drop 4", 0.0128},
                {"share 4", 0.0016},
                {"cluster 5", 0.0001},
                {"drop 5", 0.5}};
  PlanSearchOptions options;
  options.max_ppl_increase = 0.025;  // exp(0.0246) - 1 fits; anything costlier does not
  options.kv_budget_bytes = 64 * 6 * 100;
  options.sequence_tokens = 10;
  auto loss = [&](const AttentionPlan& p) -> absl::StatusOr<double> { return model.Loss(p); };
  absl::StatusOr<PlanSearchResult> result =
      SearchAttentionPlan(config, Stats(), loss, loss, options);
  ASSERT_TRUE(result.ok()) << result.status();
  std::vector<std::string> accepted;
  for (const PlanSearchStep& s : result->steps) {
    if (s.accepted) accepted.push_back(s.change);
  }
  // Per byte: cluster 5 6.25e-6, share 4 5e-5, drop 3 1e-4, drop 4 2e-4 (layer 4 is taken by
  // then); every other change costs 1 and breaks the tolerance.
  EXPECT_THAT(accepted, ElementsAre("unfolded", "layer 5: cluster 1 of 2 KV heads",
                                    "layer 4: share from 2", "layer 3: drop"));
  EXPECT_EQ(result->plan.layers[3].mode, AttentionMode::kDrop);
  EXPECT_EQ(result->plan.layers[4].mode, AttentionMode::kShare);
  EXPECT_EQ(result->plan.layers[4].source, 2);
  EXPECT_THAT(result->plan.layers[4].align, ElementsAre(1, 0, 2, 3));
  EXPECT_EQ(result->steps.front().kv_bytes_per_token, 6u * 64);
  EXPECT_EQ(result->steps.front().sequences_fit, 10);
  for (const PlanSearchStep& s : result->steps) {
    if (s.accepted) {
      EXPECT_LE(s.heldout_ppl, std::exp(1.0) * 1.025 + 1e-12) << s.change;
    } else {
      EXPECT_GT(s.heldout_ppl, std::exp(1.0) * 1.025) << s.change;
    }
  }
}

TEST(PlanSearchTest, StopsAtTheKvTarget) {
  const ModelConfig config = SixLayers();
  CostModel model;
  for (int l = 0; l < 6; ++l) model.cost["drop " + std::to_string(l)] = 0.0;
  PlanSearchOptions options;
  options.target_kv_saving = 0.3;  // two of six layers dropped is 33 %
  auto loss = [&](const AttentionPlan& p) -> absl::StatusOr<double> { return model.Loss(p); };
  absl::StatusOr<PlanSearchResult> result =
      SearchAttentionPlan(config, Stats(), loss, loss, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps.back().kv_bytes_per_token, 4u * 64);
  int dropped = 0;
  for (const LayerPlan& l : result->plan.layers) dropped += l.mode == AttentionMode::kDrop;
  EXPECT_EQ(dropped, 2);
}

TEST(PlanSearchTest, SharesOnlyFromFullLayersAndNeverTheEdges) {
  const ModelConfig config = SixLayers();
  CostModel model;
  for (int l = 0; l < 6; ++l) model.cost["share " + std::to_string(l)] = 0.0;
  PlanSearchOptions options;
  options.max_ppl_increase = 10.0;
  options.candidates_per_kind = 6;
  auto loss = [&](const AttentionPlan& p) -> absl::StatusOr<double> { return model.Loss(p); };
  absl::StatusOr<PlanSearchResult> result =
      SearchAttentionPlan(config, Stats(), loss, loss, options);
  ASSERT_TRUE(result.ok()) << result.status();
  const AttentionPlan& plan = result->plan;
  for (int l : {0, 1, 5}) EXPECT_NE(plan.layers[l].mode, AttentionMode::kShare) << l;
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    if (plan.layers[l].mode != AttentionMode::kShare) continue;
    EXPECT_EQ(plan.layers[plan.layers[l].source].mode, AttentionMode::kFull) << l;
  }
}

TEST(PlanSearchTest, ARoundWithEveryCandidateRejectedIsNotTheEnd) {
  const ModelConfig config = SixLayers();
  CostModel model;
  // One candidate per kind per round; the best drop (layer 3) and every share and cluster break
  // the tolerance, the next drop (layer 4) does not: it is only offered in the second round.
  model.cost = {{"drop 3", 0.5}, {"drop 4", 0.001}};
  PlanSearchOptions options;
  options.candidates_per_kind = 1;
  options.max_rejections = 10;
  auto loss = [&](const AttentionPlan& p) -> absl::StatusOr<double> { return model.Loss(p); };
  absl::StatusOr<PlanSearchResult> result =
      SearchAttentionPlan(config, Stats(), loss, loss, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->plan.layers[4].mode, AttentionMode::kDrop);
  EXPECT_EQ(result->plan.layers[3].mode, AttentionMode::kFull);
}

TEST(PlanSearchTest, LossErrorsPropagate) {
  auto failing = [](const AttentionPlan&) -> absl::StatusOr<double> {
    return absl::InternalError("model failed");
  };
  EXPECT_EQ(SearchAttentionPlan(SixLayers(), Stats(), failing, failing, {}).status().code(),
            absl::StatusCode::kInternal);
  CalibrationStats short_stats = Stats();
  short_stats.drop_score.pop_back();
  auto ok = [](const AttentionPlan&) -> absl::StatusOr<double> { return 1.0; };
  EXPECT_EQ(SearchAttentionPlan(SixLayers(), short_stats, ok, ok, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvfold
