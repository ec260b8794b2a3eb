// The calibration pass on the real stories260K: its statistics are well-formed, consistent with
// each other, and turn into plans the loader accepts.
#include "worker/calibration_pass.h"

#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "worker/attention_plan.h"
#include "worker/model_loader.h"

namespace kvfold {
namespace {

using testing::LoadModel;
using testing::SourcePath;

class CalibrationPassTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ops_ = NewCpuOps(1);
    absl::StatusOr<std::unique_ptr<LlamaModel>> model =
        LoadModel(SourcePath("models/stories260K"), *ops_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }

  std::vector<std::vector<int32_t>> Windows(int count, int tokens) {
    std::mt19937 rng(11);
    std::uniform_int_distribution<int32_t> id(3, model_->config().vocab_size - 1);
    std::vector<std::vector<int32_t>> windows(count);
    for (auto& w : windows) {
      w.push_back(1);  // BOS
      while (static_cast<int>(w.size()) < tokens) w.push_back(id(rng));
    }
    return windows;
  }

  std::unique_ptr<Ops> ops_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(CalibrationPassTest, StatisticsAreWellFormedAndMakeValidPlans) {
  const ModelConfig& c = model_->config();
  absl::StatusOr<CalibrationStats> stats =
      GatherCalibrationStats(*model_, *ops_, Windows(2, 40), {});
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->drop_score.size(), static_cast<size_t>(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) {
    EXPECT_GT(stats->drop_score[l], -1.0);
    EXPECT_LE(stats->drop_score[l], 1.0 + 1e-9);
    EXPECT_LT(stats->drop_score[l], 1.0 - 1e-6) << "layer " << l << "'s attention does nothing?";
    ASSERT_EQ(stats->share[l].size(), static_cast<size_t>(std::min(l, 3)));
    for (size_t i = 0; i < stats->share[l].size(); ++i) {
      const CalibrationStats::Share& s = stats->share[l][i];
      EXPECT_LT(s.source, l);
      EXPECT_GT(s.similarity, 0.0);
      EXPECT_LE(s.similarity, 1.0 + 1e-9);
      if (i > 0) {
        EXPECT_GE(stats->share[l][i - 1].similarity, s.similarity);
      }
    }
    EXPECT_GE(stats->chai_clusters[l], 1);
    EXPECT_LE(stats->chai_clusters[l], c.num_kv_heads);
  }
  // Every statistic turns into a plan the loader's validation accepts.
  for (int l = 2; l < c.num_layers - 1; ++l) {
    AttentionPlan plan = FullAttentionPlan(c);
    plan.layers[l].mode = AttentionMode::kShare;
    plan.layers[l].source = stats->share[l][0].source;
    plan.layers[l].align = stats->share[l][0].align;
    EXPECT_TRUE(ValidateAttentionPlan(plan, c).ok()) << ValidateAttentionPlan(plan, c);
    plan.layers[l] = LayerPlan();
    plan.layers[l].mode = AttentionMode::kCluster;
    plan.layers[l].clusters = stats->chai_clusters[l];
    plan.layers[l].static_map = stats->chai_map[l];
    EXPECT_TRUE(ValidateAttentionPlan(plan, c).ok()) << ValidateAttentionPlan(plan, c);
  }
}

TEST_F(CalibrationPassTest, ClustersStayInsideTensorParallelShards) {
  const ModelConfig& c = model_->config();
  CalibrationPassOptions options;
  options.tensor_parallel_size = 2;
  absl::StatusOr<CalibrationStats> stats =
      GatherCalibrationStats(*model_, *ops_, Windows(1, 24), options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  const int shard = c.num_kv_heads / 2;
  for (int l = 0; l < c.num_layers; ++l) {
    EXPECT_GE(stats->chai_clusters[l], 2);
    for (int g = 0; g < c.num_kv_heads; ++g) {
      EXPECT_EQ(stats->chai_map[l][g] / shard, g / shard) << "layer " << l << " head " << g;
    }
  }
  options.tensor_parallel_size = 3;  // does not divide 4 KV heads
  EXPECT_FALSE(GatherCalibrationStats(*model_, *ops_, Windows(1, 24), options).ok());
}

TEST_F(CalibrationPassTest, NoWindowsIsAnError) {
  EXPECT_FALSE(GatherCalibrationStats(*model_, *ops_, {}, {}).ok());
}

TEST_F(CalibrationPassTest, AFoldedModelIsRefused) {
  absl::StatusOr<std::unique_ptr<WeightSource>> weights =
      OpenWeights(SourcePath("models/stories260K"));
  ASSERT_TRUE(weights.ok());
  AttentionPlan plan = FullAttentionPlan((*weights)->config());
  plan.layers[2].mode = AttentionMode::kDrop;
  absl::StatusOr<std::unique_ptr<LlamaModel>> folded =
      LlamaModel::Load(*std::move(weights), *ops_, plan);
  ASSERT_TRUE(folded.ok()) << folded.status();
  const absl::Status s = GatherCalibrationStats(**folded, *ops_, Windows(1, 24), {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

}  // namespace
}  // namespace kvfold
