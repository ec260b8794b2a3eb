// The sampler: each logit processor against a hand-computed example, log-probabilities, greedy
// ties, seeded determinism, and a statistical check of the filtered distribution.
#include "worker/sampler.h"

#include <cmath>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

// Which tokens a sampling configuration can draw (non-zero filtered probability).
std::vector<int32_t> Kept(const std::vector<float>& logits, const SamplingParams& params) {
  std::vector<int32_t> kept;
  const std::vector<double> probs = FilteredProbabilities(logits, params);
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] > 0) kept.push_back(static_cast<int32_t>(i));
  }
  return kept;
}

SamplingParams Temperature(float t) { return SamplingParams{.temperature = t}; }

TEST(SamplerTest, LogProbabilityIsLogSoftmax) {
  const std::vector<float> logits = {0.0f, std::log(3.0f), -1000.0f};
  EXPECT_NEAR(LogProbability(logits, 1), std::log(0.75), 1e-6);
  EXPECT_NEAR(LogProbability(logits, 0), std::log(0.25), 1e-6);
  EXPECT_NEAR(LogProbability(logits, 2), -1000.0 + std::log(0.25), 1e-3);
  // Shifting every logit changes nothing.
  const std::vector<float> shifted = {500.0f, 500.0f + std::log(3.0f), -500.0f};
  EXPECT_NEAR(LogProbability(shifted, 1), std::log(0.75), 1e-4);
}

TEST(SamplerTest, TopLogprobsAreSortedWithTiesByLowerId) {
  // probabilities 0.1, 0.4, 0.1, 0.4
  const std::vector<float> logits = {0.0f, std::log(4.0f), 0.0f, std::log(4.0f)};
  const auto top = TopLogprobs(logits, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].first, 1);
  EXPECT_EQ(top[1].first, 3);
  EXPECT_EQ(top[2].first, 0);
  EXPECT_NEAR(top[0].second, std::log(0.4), 1e-6);
  EXPECT_NEAR(top[2].second, std::log(0.1), 1e-6);
  EXPECT_EQ(top[0].second, LogProbability(logits, 1));
  EXPECT_EQ(TopLogprobs(logits, 10).size(), 4u);
  EXPECT_TRUE(TopLogprobs(logits, 0).empty());
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

TEST(SamplerTest, TopKKeepsExactlyKWithTiesByLowerId) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, 2.0f, 0.0f};
  SamplingParams p = Temperature(1.0f);
  p.top_k = 1;
  EXPECT_THAT(Kept(logits, p), ElementsAre(1));
  p.top_k = 3;
  EXPECT_THAT(Kept(logits, p), ElementsAre(1, 2, 3));  // of the tied 2s, id 2 before id 4
  p.top_k = 6;
  EXPECT_EQ(Kept(logits, p).size(), 6u);
  p.top_k = 100;
  EXPECT_EQ(Kept(logits, p).size(), 6u);
  // The survivors are renormalized: e^3 / (2 e^3 + e^2) each for ids 1 and 3.
  p.top_k = 3;
  const std::vector<double> probs = FilteredProbabilities(logits, p);
  const double z = 2 * std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(probs[1], std::exp(3.0) / z, 1e-9);
  EXPECT_NEAR(probs[2], std::exp(2.0) / z, 1e-9);
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixWithEnoughMass) {
  // probabilities 0.5, 0.2, 0.15, 0.1, 0.05
  const std::vector<float> logits = {std::log(0.5f), std::log(0.2f), std::log(0.15f),
                                     std::log(0.1f), std::log(0.05f)};
  SamplingParams p = Temperature(1.0f);
  p.top_p = 0.45f;
  EXPECT_THAT(Kept(logits, p), ElementsAre(0));
  p.top_p = 0.6f;
  EXPECT_THAT(Kept(logits, p), ElementsAre(0, 1));
  p.top_p = 0.84f;
  EXPECT_THAT(Kept(logits, p), ElementsAre(0, 1, 2));
  p.top_p = 0.86f;
  EXPECT_THAT(Kept(logits, p), ElementsAre(0, 1, 2, 3));
  p.top_p = 0.01f;
  EXPECT_THAT(Kept(logits, p), ElementsAre(0)) << "never empty";
  // After top_k the mass is the survivors' (0.85): 0.5 / 0.85 < 0.75 <= 0.7 / 0.85.
  p.top_k = 3;
  p.top_p = 0.75f;
  EXPECT_THAT(Kept(logits, p), ElementsAre(0, 1));
}

TEST(SamplerTest, MinPIsRelativeToTheHighestProbability) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.2f), std::log(0.15f),
                                     std::log(0.1f), std::log(0.05f)};
  SamplingParams p = Temperature(1.0f);
  p.min_p = 0.29f;  // threshold 0.145
  EXPECT_THAT(Kept(logits, p), ElementsAre(0, 1, 2));
  p.min_p = 0.41f;  // threshold 0.205
  EXPECT_THAT(Kept(logits, p), ElementsAre(0));
  // Temperature applies first: at T = 2 the probabilities are proportional to sqrt(p).
  p = Temperature(2.0f);
  p.min_p = 0.5f;  // sqrt(0.15 / 0.5) = 0.548 >= 0.5 > sqrt(0.1 / 0.5) = 0.447
  EXPECT_THAT(Kept(logits, p), ElementsAre(0, 1, 2));
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  std::vector<float> logits = {2.0f, -2.0f, 2.0f, -2.0f, 1.0f};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0, 0, 1}, output = {3};
  ApplyBiasAndPenalties(p, {prompt, output}, absl::MakeSpan(logits));
  EXPECT_THAT(logits, ElementsAre(1.0f, -4.0f, 2.0f, -4.0f, 1.0f)) << "once per token";
}

TEST(SamplerTest, FrequencyAndPresencePenaltiesCountOutputTokensOnly) {
  std::vector<float> logits = {1.0f, 1.0f, 1.0f, 1.0f};
  SamplingParams p;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  const std::vector<int32_t> prompt = {0, 0, 0}, output = {1, 2, 2, 2};
  ApplyBiasAndPenalties(p, {prompt, output}, absl::MakeSpan(logits));
  EXPECT_THAT(logits, ElementsAre(1.0f, 1.0f - 0.5f - 0.25f, 1.0f - 1.5f - 0.25f, 1.0f));
}

TEST(SamplerTest, LogitBiasComesFirstAndCanForceAToken) {
  const std::vector<float> logits = {5.0f, 1.0f, 0.0f};
  SamplingParams p;
  p.logit_bias = {{2, 100.0f}, {7, 100.0f}};  // id 7 is outside the vocabulary: ignored
  EXPECT_EQ(Sample(logits, p, 0), 2);
  p.temperature = 1.0f;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    p.seed = seed;
    EXPECT_EQ(Sample(logits, p, 3), 2);
  }
  // Bias before the repetition penalty: 1 + 3 = 4, then divided by 2.
  std::vector<float> biased = {1.0f, 1.0f};
  p.logit_bias = {{0, 3.0f}};
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0};
  ApplyBiasAndPenalties(p, {prompt, {}}, absl::MakeSpan(biased));
  EXPECT_THAT(biased, ElementsAre(2.0f, 1.0f));
}

TEST(SamplerTest, GreedyUsesPenalizedLogits) {
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f};
  SamplingParams p;
  p.presence_penalty = 2.0f;
  const std::vector<int32_t> prompt = {1}, output = {0};
  EXPECT_EQ(Sample(logits, p, 1, {prompt, output}), 1);
  EXPECT_EQ(Sample(logits, p, 1), 0) << "no history, no penalty";
}

// 20,000 seeds over a fixed 5-token distribution: each token's count is within 4 sigma of the
// filtered distribution's expectation, and filtered tokens never appear.
TEST(SamplerTest, SampledFrequenciesMatchTheFilteredDistribution) {
  const std::vector<float> logits = {std::log(0.4f), std::log(0.25f), std::log(0.2f),
                                     std::log(0.1f), std::log(0.05f)};
  std::vector<SamplingParams> configs(4, Temperature(1.0f));
  configs[1].top_k = 3;
  configs[2].top_p = 0.8f;
  configs[3].temperature = 0.7f;
  configs[3].min_p = 0.2f;
  constexpr int kDraws = 20000;
  for (const SamplingParams& config : configs) {
    const std::vector<double> expected = FilteredProbabilities(logits, config);
    std::vector<int> counts(logits.size(), 0);
    for (int seed = 0; seed < kDraws; ++seed) {
      SamplingParams p = config;
      p.seed = static_cast<uint64_t>(seed);
      ++counts[Sample(logits, p, /*position=*/seed % 7)];
    }
    for (size_t i = 0; i < logits.size(); ++i) {
      const double mean = kDraws * expected[i];
      const double sigma = std::sqrt(kDraws * expected[i] * (1 - expected[i]));
      SCOPED_TRACE(::testing::Message() << "top_k " << config.top_k << " top_p " << config.top_p
                                        << " min_p " << config.min_p << " token " << i);
      if (expected[i] == 0) {
        EXPECT_EQ(counts[i], 0);
      } else {
        EXPECT_NEAR(counts[i], mean, 4 * sigma);
      }
    }
  }
  // The filters did filter: top_k 3 drops two tokens, top_p 0.8 keeps 0.4 + 0.25 + 0.2.
  EXPECT_EQ(FilteredProbabilities(logits, configs[1])[3], 0.0);
  EXPECT_NEAR(FilteredProbabilities(logits, configs[2])[0], 0.4 / 0.85, 1e-6);
  EXPECT_EQ(FilteredProbabilities(logits, configs[2])[3], 0.0);
}

}  // namespace
}  // namespace kvfold
