// Sampler pieces the engine relies on: log-probabilities, greedy ties, seeded determinism.
#include "worker/sampler.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

TEST(SamplerTest, LogProbabilityIsLogSoftmax) {
  const std::vector<float> logits = {0.0f, std::log(3.0f), -1000.0f};
  EXPECT_NEAR(LogProbability(logits, 1), std::log(0.75), 1e-6);
  EXPECT_NEAR(LogProbability(logits, 0), std::log(0.25), 1e-6);
  EXPECT_NEAR(LogProbability(logits, 2), -1000.0 + std::log(0.25), 1e-3);
  // Shifting every logit changes nothing.
  const std::vector<float> shifted = {500.0f, 500.0f + std::log(3.0f), -500.0f};
  EXPECT_NEAR(LogProbability(shifted, 1), std::log(0.75), 1e-4);
}

TEST(SamplerTest, GreedyTakesTheLowestIndexAmongTies) {
  EXPECT_EQ(Sample(std::vector<float>{1, 3, 3, 2}, {}, 0), 1);
}

TEST(SamplerTest, SeededSamplingDependsOnSeedAndPositionOnly) {
  const std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
  const SamplingParams p{1.0f, 42};
  std::vector<int32_t> a, b;
  for (int i = 0; i < 32; ++i) a.push_back(Sample(logits, p, i));
  for (int i = 0; i < 32; ++i) b.push_back(Sample(logits, p, i));
  EXPECT_EQ(a, b);
  std::vector<int32_t> c;
  for (int i = 0; i < 32; ++i) c.push_back(Sample(logits, {1.0f, 43}, i));
  EXPECT_NE(a, c);
}

}  // namespace
}  // namespace kvfold
