// worker/perplexity: the NLL of one token against the naive softmax formula, the windowing rules,
// and EvaluatePerplexity's chunked forward passes against whole-window logits from
// SequenceRunner scored with the naive formula.
#include "worker/perplexity.h"

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "worker/sequence_runner.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Windows = std::vector<std::vector<int32_t>>;

// -log(exp(x_t) / Σ exp(x_i)) written as the definition, in long double.
double NaiveNll(const std::vector<float>& logits, int32_t target) {
  long double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<long double>(x));
  return static_cast<double>(-std::log(std::exp(static_cast<long double>(logits[target])) / sum));
}

TEST(TokenNllTest, MatchesTheSoftmaxDefinition) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> logits(300);
    for (float& x : logits) x = normal(gen);
    const int32_t target = static_cast<int32_t>(gen() % logits.size());
    EXPECT_NEAR(TokenNll(logits, target), NaiveNll(logits, target), 1e-9);
  }
}

TEST(TokenNllTest, UniformLogitsGiveLogVocab) {
  const std::vector<float> logits(1000, 3.5f);
  EXPECT_NEAR(TokenNll(logits, 17), std::log(1000.0), 1e-12);
}

TEST(TokenNllTest, LargeLogitsDoNotOverflow) {
  // exp(1000) overflows double: only a shifted log-sum-exp gets log(1 + e^-1) here.
  const std::vector<float> logits = {1000.0f, 999.0f};
  EXPECT_NEAR(TokenNll(logits, 0), std::log1p(std::exp(-1.0)), 1e-12);
  EXPECT_NEAR(TokenNll(logits, 1), 1.0 + std::log1p(std::exp(-1.0)), 1e-12);
}

TEST(PerplexityResultTest, MeanAndPerplexity) {
  PerplexityResult r;
  r.nll_sum = 6.0;
  r.tokens_scored = 4;
  EXPECT_DOUBLE_EQ(r.MeanNll(), 1.5);
  EXPECT_DOUBLE_EQ(r.Perplexity(), std::exp(1.5));
  EXPECT_TRUE(std::isnan(PerplexityResult{}.MeanNll()));
}

std::vector<int32_t> Range(int32_t n) {
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = 10 + i;
  return ids;
}

TEST(MakePerplexityWindowsTest, BosStartsEveryWindow) {
  EXPECT_THAT(
      MakePerplexityWindows(Range(7), 1, 4),
      ElementsAre(ElementsAre(1, 10, 11, 12), ElementsAre(1, 13, 14, 15), ElementsAre(1, 16)));
}

TEST(MakePerplexityWindowsTest, WithoutBosWindowsAreTextAlone) {
  // The first token of each window is context only; a lone trailing token scores nothing.
  EXPECT_THAT(MakePerplexityWindows(Range(9), std::nullopt, 4),
              ElementsAre(ElementsAre(10, 11, 12, 13), ElementsAre(14, 15, 16, 17)));
  EXPECT_THAT(
      MakePerplexityWindows(Range(10), std::nullopt, 4),
      ElementsAre(ElementsAre(10, 11, 12, 13), ElementsAre(14, 15, 16, 17), ElementsAre(18, 19)));
}

TEST(MakePerplexityWindowsTest, CapCutsTheLastWindow) {
  EXPECT_THAT(MakePerplexityWindows(Range(20), 1, 4, /*max_scored=*/5),
              ElementsAre(ElementsAre(1, 10, 11, 12), ElementsAre(1, 13, 14)));
  EXPECT_THAT(MakePerplexityWindows(Range(20), std::nullopt, 4, /*max_scored=*/4),
              ElementsAre(ElementsAre(10, 11, 12, 13), ElementsAre(14, 15)));
  EXPECT_THAT(MakePerplexityWindows(Range(20), 1, 4, /*max_scored=*/3),
              ElementsAre(ElementsAre(1, 10, 11, 12)));
}

TEST(MakePerplexityWindowsTest, NothingToScore) {
  EXPECT_TRUE(MakePerplexityWindows({}, 1, 8).empty());
  EXPECT_TRUE(MakePerplexityWindows(Range(1), std::nullopt, 8).empty());
  EXPECT_TRUE(MakePerplexityWindows(Range(5), 1, 1).empty());
  EXPECT_THAT(MakePerplexityWindows(Range(1), 1, 8), ElementsAre(ElementsAre(1, 10)));
}

class EvaluatePerplexityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model =
        testing::LoadModel(testing::SourcePath("tests/fixtures/models/tiny-llama3"), *ops_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }

  // Σ NLL over the windows from each window's logits at once (SequenceRunner, all rows), scored
  // with the naive formula.
  double ReferenceNllSum(const Windows& windows) {
    const int32_t vocab = model_->config().vocab_size;
    double sum = 0;
    for (const std::vector<int32_t>& w : windows) {
      SequenceRunner runner(*model_, *ops_, static_cast<int32_t>(w.size()));
      absl::StatusOr<std::vector<float>> logits = runner.Append(w, /*all_logits=*/true);
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) return NAN;
      for (size_t i = 0; i + 1 < w.size(); ++i) {
        sum += NaiveNll(
            std::vector<float>(logits->begin() + i * vocab, logits->begin() + (i + 1) * vocab),
            w[i + 1]);
      }
    }
    return sum;
  }

  Windows RandomWindows() {
    std::mt19937 gen(3);
    std::vector<int32_t> text(70);
    for (int32_t& id : text) id = static_cast<int32_t>(gen() % model_->config().vocab_size);
    return MakePerplexityWindows(text, 1, 25);  // 25, 25, 23 tokens
  }

  std::unique_ptr<Ops> ops_ = NewCpuOps(2);
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(EvaluatePerplexityTest, ChunkedPassesMatchWholeWindowLogits) {
  const Windows windows = RandomWindows();
  ASSERT_EQ(windows.size(), 3u);
  const double want = ReferenceNllSum(windows);
  KvCache cache(*ops_, model_->config(), /*num_blocks=*/2, /*block_size=*/16);
  for (int chunk_rows : {1, 7, 25, 128}) {
    PerplexityOptions options;
    options.chunk_rows = chunk_rows;
    std::vector<int64_t> progress;
    options.progress = [&](int64_t done, int64_t total) {
      progress.push_back(done);
      EXPECT_EQ(total, 73);
    };
    absl::StatusOr<PerplexityResult> got = EvaluatePerplexity(*model_, cache, windows, options);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->tokens_scored, 70);
    EXPECT_EQ(got->tokens_forwarded, 73);
    EXPECT_NEAR(got->nll_sum, want, 1e-4 * std::abs(want)) << "chunk_rows " << chunk_rows;
    ASSERT_FALSE(progress.empty());
    EXPECT_EQ(progress.back(), 73);
  }
}

TEST_F(EvaluatePerplexityTest, RejectsWhatItCannotRun) {
  KvCache small(*ops_, model_->config(), /*num_blocks=*/1, /*block_size=*/16);
  absl::StatusOr<PerplexityResult> r = EvaluatePerplexity(*model_, small, RandomWindows());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("does not fit"));

  const Windows bad_id = {{1, model_->config().vocab_size}};
  r = EvaluatePerplexity(*model_, small, bad_id);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("outside the vocabulary"));
}

TEST_F(EvaluatePerplexityTest, CacheBytesPerTokenIsTheLayerSum) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    KvCache cache(*ops_, model_->config(), 1, 16, dtype);
    const ModelConfig& c = model_->config();
    EXPECT_EQ(CacheBytesPerToken(cache), static_cast<size_t>(c.num_layers) * 2 * c.num_kv_heads *
                                             c.head_dim * (dtype == DType::kF32 ? 4 : 2));
  }
}

}  // namespace
}  // namespace kvfold
