// The device sampler's batch packing (worker/device_sampler.h): per-row fields, logit_bias and
// the penalty lists in CSR form. Applied the way the device applies them (bias in list order, then
// per listed token the repetition penalty and the output-count penalties), the packed lists must
// give ApplyBiasAndPenalties's logits bit for bit.
#include "worker/device_sampler.h"

#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/sampler.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

// The device's bias and penalty pass (kernels/cuda/sampling_kernels.cu) on one row, on the host.
void ApplyPacked(const DeviceSamplingBatch& b, int row, std::vector<float>& logits) {
  const DeviceSamplingRow& p = b.rows[row];
  const auto vocab = static_cast<int32_t>(logits.size());
  for (int32_t i = b.bias_offsets[row]; i < b.bias_offsets[row + 1]; ++i) {
    if (b.bias_tokens[i] >= 0 && b.bias_tokens[i] < vocab) {
      logits[b.bias_tokens[i]] += b.bias_values[i];
    }
  }
  for (int32_t i = b.history_offsets[row]; i < b.history_offsets[row + 1]; ++i) {
    float& l = logits[b.history_tokens[i]];
    if (p.repetition_penalty != 1.0f) {
      l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
    if ((p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) && b.output_counts[i] > 0) {
      l -= p.frequency_penalty * static_cast<float>(b.output_counts[i]) + p.presence_penalty;
    }
  }
}

TEST(DeviceSamplerPackingTest, CopiesTheRowFieldsAndBuildsCsrLists) {
  SamplingParams greedy;
  SamplingParams seeded{.temperature = 0.7f, .seed = 99, .top_k = 5, .top_p = 0.8f, .min_p = 0.1f};
  seeded.logit_bias = {{3, 1.5f}, {-1, 2.0f}, {3, -0.5f}, {10, 4.0f}, {2, -7.0f}};
  const std::vector<DeviceSampleRequest> requests = {{4, &greedy, 0, {}}, {1, &seeded, 17, {}}};
  const DeviceSamplingBatch b = PackDeviceSamplingBatch(requests, 10);
  ASSERT_EQ(b.rows.size(), 2u);
  EXPECT_EQ(b.rows[0].logits_row, 4);
  EXPECT_EQ(b.rows[0].temperature, 0.0f);
  EXPECT_EQ(b.rows[1].logits_row, 1);
  EXPECT_EQ(b.rows[1].temperature, 0.7f);
  EXPECT_EQ(b.rows[1].seed, 99u);
  EXPECT_EQ(b.rows[1].position, 17u);
  EXPECT_EQ(b.rows[1].top_k, 5);
  EXPECT_EQ(b.rows[1].top_p, 0.8f);
  EXPECT_EQ(b.rows[1].min_p, 0.1f);
  // Ids outside [0, 10) dropped, the rest in order, the repeated token kept twice.
  EXPECT_THAT(b.bias_offsets, ElementsAre(0, 0, 3));
  EXPECT_THAT(b.bias_tokens, ElementsAre(3, 3, 2));
  EXPECT_THAT(b.bias_values, ElementsAre(1.5f, -0.5f, -7.0f));
  EXPECT_THAT(b.history_offsets, ElementsAre(0, 0, 0));
}

TEST(DeviceSamplerPackingTest, ListsPromptTokensOnlyUnderARepetitionPenalty) {
  const std::vector<int32_t> prompt = {4, 4, 7, 12}, output = {7, 2, 7, -3};
  SamplingParams repetition{.temperature = 1.0f, .repetition_penalty = 1.2f};
  SamplingParams frequency{.temperature = 1.0f, .frequency_penalty = 0.5f};
  const std::vector<DeviceSampleRequest> requests = {{0, &repetition, 2, {prompt, output}},
                                                     {1, &frequency, 2, {prompt, output}}};
  const DeviceSamplingBatch b = PackDeviceSamplingBatch(requests, 10);
  ASSERT_THAT(b.history_offsets, ElementsAre(0, 3, 5));
  std::vector<std::pair<int32_t, int32_t>> first, second;  // (token, output count)
  for (int i = 0; i < 3; ++i) first.emplace_back(b.history_tokens[i], b.output_counts[i]);
  for (int i = 3; i < 5; ++i) second.emplace_back(b.history_tokens[i], b.output_counts[i]);
  // 12 and -3 are outside the vocabulary of 10.
  EXPECT_THAT(first, UnorderedElementsAre(std::pair(4, 0), std::pair(7, 2), std::pair(2, 1)));
  EXPECT_THAT(second, UnorderedElementsAre(std::pair(7, 2), std::pair(2, 1)));
}

TEST(DeviceSamplerPackingTest, PackedListsReproduceApplyBiasAndPenalties) {
  constexpr int32_t kVocab = 64;
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> token(-2, kVocab + 2);
  std::normal_distribution<float> value(0.0f, 4.0f);
  for (int trial = 0; trial < 200; ++trial) {
    SamplingParams p;
    p.temperature = 1.0f;
    const float reps[] = {1.0f, 0.7f, 1.3f};
    const float freqs[] = {0.0f, 0.4f, -1.1f};
    p.repetition_penalty = reps[trial % 3];
    p.frequency_penalty = freqs[(trial / 3) % 3];
    p.presence_penalty = freqs[(trial / 9) % 3];
    for (int i = 0; i < trial % 5; ++i) p.logit_bias.emplace_back(token(rng), value(rng));
    std::vector<int32_t> prompt(1 + trial % 40), output(trial % 30);
    for (int32_t& t : prompt) t = token(rng) % 20;  // small range: repeats
    for (int32_t& t : output) t = token(rng) % 20;
    std::vector<float> logits(kVocab);
    for (float& l : logits) l = value(rng);
    const TokenHistory history{prompt, output};
    const DeviceSampleRequest request{0, &p, 0, history};
    const DeviceSamplingBatch b = PackDeviceSamplingBatch({&request, 1}, kVocab);

    std::vector<float> want = logits, got = logits;
    ApplyBiasAndPenalties(p, history, absl::MakeSpan(want));
    ApplyPacked(b, 0, got);
    ASSERT_EQ(got, want) << "trial " << trial;
  }
}

}  // namespace
}  // namespace kvfold
