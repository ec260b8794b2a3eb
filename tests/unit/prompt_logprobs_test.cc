// Prompt logprobs end to end through the engine loop (Scheduler + ModelExecutor on stories260K)
// against an independent reference: one LlamaModel::Forward over the whole prompt with every
// logits row, log-softmax in double here. Covers a prompt in one chunk, a prompt chunked by a
// small token budget, and a prompt whose prefix an earlier request left in the prefix cache
// (every position must still be scored).
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "scheduler/engine.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "worker/kv_cache.h"
#include "worker/model_executor.h"

namespace kvfold {
namespace {

constexpr int32_t kBlockSize = 4;
constexpr int32_t kNumBlocks = 96;
constexpr int32_t kTop = 3;

// One request's deltas, gathered from the engine thread.
class Collector {
 public:
  Engine::OutputCallback Callback() {
    return [this](const RequestOutput& out) {
      std::lock_guard<std::mutex> lock(mu_);
      outputs_.push_back(out);
      done_ = out.finish_reason.has_value();
      cv_.notify_all();
    };
  }
  const std::vector<RequestOutput>& Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return outputs_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<RequestOutput> outputs_;
  bool done_ = false;
};

class PromptLogprobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ops_ = NewCpuOps(2);
    absl::StatusOr<std::unique_ptr<LlamaModel>> model =
        testing::LoadModel(testing::SourcePath("models/stories260K"), *ops_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    vocab_ = model_->config().vocab_size;
  }

  void StartEngine(int32_t max_num_batched_tokens) {
    cache_ =
        std::make_unique<KvCache>(*ops_, model_->config(), kNumBlocks, kBlockSize, DType::kF32);
    executor_ = std::make_unique<ModelExecutor>(*model_, *cache_);
    SchedulerConfig config;
    config.max_num_batched_tokens = max_num_batched_tokens;
    engine_ =
        std::make_unique<Engine>(config, kNumBlocks, kBlockSize, /*cache_salt=*/0, *executor_);
  }

  // Runs one greedy request to its end; returns its outputs.
  std::vector<RequestOutput> Run(RequestId id, const std::vector<int32_t>& prompt,
                                 std::optional<int32_t> prompt_logprobs, int32_t max_tokens = 2) {
    Request request;
    request.id = id;
    request.prompt_token_ids = prompt;
    request.max_tokens = max_tokens;
    request.prompt_logprobs = prompt_logprobs;
    Collector collector;
    EXPECT_TRUE(engine_->Submit(request, collector.Callback()).ok());
    return collector.Wait();
  }

  // Every row's logits for `prompt`, from one forward on a fresh cache (blocks 0, 1, ...).
  std::vector<float> ReferenceLogits(const std::vector<int32_t>& prompt) {
    const int32_t n = static_cast<int32_t>(prompt.size());
    const int32_t num_blocks = (n + kBlockSize - 1) / kBlockSize;
    KvCache cache(*ops_, model_->config(), num_blocks, kBlockSize, DType::kF32);
    ForwardBatchArrays batch;
    batch.token_ids = prompt;
    batch.positions.resize(n);
    std::iota(batch.positions.begin(), batch.positions.end(), 0);
    batch.logits_rows = batch.positions;
    batch.block_tables.resize(num_blocks);
    std::iota(batch.block_tables.begin(), batch.block_tables.end(), 0);
    batch.max_blocks_per_seq = num_blocks;
    batch.slot_mapping.assign(batch.positions.begin(), batch.positions.end());
    batch.query_start = {0, n};
    batch.context_len = {n};
    std::vector<float> logits(static_cast<size_t>(n) * vocab_);
    const absl::Status s = model_->Forward(batch.View(), cache, logits.data());
    EXPECT_TRUE(s.ok()) << s;
    return logits;
  }

  // The engine's prompt logprobs against the reference: for position p >= 1, the log-softmax
  // (double) of row p - 1 at prompt[p], its rank, and the top kTop ids and values.
  void ExpectMatchesReference(const std::vector<TokenLogprob>& got,
                              const std::vector<int32_t>& prompt) {
    const std::vector<float> logits = ReferenceLogits(prompt);
    ASSERT_EQ(got.size(), prompt.size() - 1);
    for (size_t p = 1; p < prompt.size(); ++p) {
      SCOPED_TRACE(::testing::Message() << "position " << p);
      const float* row = logits.data() + (p - 1) * vocab_;
      double max = row[0];
      for (int32_t v = 0; v < vocab_; ++v) max = std::max(max, static_cast<double>(row[v]));
      double sum = 0;
      for (int32_t v = 0; v < vocab_; ++v) sum += std::exp(row[v] - max);
      std::vector<double> lp(vocab_);
      for (int32_t v = 0; v < vocab_; ++v) lp[v] = row[v] - max - std::log(sum);
      const TokenLogprob& g = got[p - 1];
      EXPECT_EQ(g.token_id, prompt[p]);
      EXPECT_NEAR(g.logprob, lp[prompt[p]], 1e-4 * std::max(1.0, std::abs(lp[prompt[p]])));
      const auto rank =
          std::count_if(lp.begin(), lp.end(), [&](double x) { return x >= lp[prompt[p]]; });
      EXPECT_EQ(g.rank, rank);
      std::vector<int32_t> order(vocab_);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return lp[a] > lp[b]; });
      ASSERT_EQ(g.top.size(), static_cast<size_t>(kTop));
      for (int32_t k = 0; k < kTop; ++k) {
        EXPECT_EQ(g.top[k].first, order[k]) << "alternative " << k;
        EXPECT_NEAR(g.top[k].second, lp[order[k]], 1e-4 * std::max(1.0, std::abs(lp[order[k]])));
      }
    }
  }

  // Prompt logprobs come once, on the first output with a token.
  static std::vector<TokenLogprob> PromptLogprobsOf(const std::vector<RequestOutput>& outputs) {
    EXPECT_FALSE(outputs.empty());
    for (size_t i = 1; i < outputs.size(); ++i) EXPECT_TRUE(outputs[i].prompt_logprobs.empty());
    EXPECT_FALSE(outputs.front().token_ids.empty());
    return outputs.front().prompt_logprobs;
  }

  std::vector<int32_t> RandomPrompt(int32_t n, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> token(3, vocab_ - 1);
    std::vector<int32_t> prompt = {1};  // BOS
    while (static_cast<int32_t>(prompt.size()) < n) prompt.push_back(token(rng));
    return prompt;
  }

  std::unique_ptr<Ops> ops_;
  std::unique_ptr<LlamaModel> model_;
  int32_t vocab_ = 0;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<ModelExecutor> executor_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(PromptLogprobsTest, OneChunkMatchesTheReference) {
  StartEngine(2048);
  const std::vector<int32_t> prompt = RandomPrompt(37, 1);
  ExpectMatchesReference(PromptLogprobsOf(Run(1, prompt, kTop)), prompt);
}

TEST_F(PromptLogprobsTest, ChunkedPromptMatchesTheReference) {
  StartEngine(8);  // 61 tokens: eight chunks
  const std::vector<int32_t> prompt = RandomPrompt(61, 2);
  ExpectMatchesReference(PromptLogprobsOf(Run(1, prompt, kTop)), prompt);
}

TEST_F(PromptLogprobsTest, CachedPrefixStillScoresEveryPosition) {
  StartEngine(2048);
  const std::vector<int32_t> first = RandomPrompt(40, 3);
  std::vector<int32_t> second(first.begin(), first.begin() + 32);  // 8 full blocks shared
  const std::vector<int32_t> tail = RandomPrompt(12, 4);
  second.insert(second.end(), tail.begin() + 1, tail.end());
  const std::vector<RequestOutput> warm = Run(1, first, std::nullopt);
  EXPECT_TRUE(PromptLogprobsOf(warm).empty());
  // The same prefix without prompt logprobs hits the cache; with them it does not.
  EXPECT_EQ(Run(2, second, std::nullopt).back().usage.cached_tokens, 32);
  const std::vector<RequestOutput> scored = Run(3, second, kTop);
  EXPECT_EQ(scored.back().usage.cached_tokens, 0);
  ExpectMatchesReference(PromptLogprobsOf(scored), second);
}

TEST_F(PromptLogprobsTest, OneTokenPromptHasNoneAndOutputsAreUnchanged) {
  StartEngine(2048);
  EXPECT_TRUE(PromptLogprobsOf(Run(1, {1}, 0)).empty());
  // Scoring the prompt does not change what is generated.
  const std::vector<int32_t> prompt = RandomPrompt(20, 5);
  auto tokens = [](const std::vector<RequestOutput>& outputs) {
    std::vector<int32_t> ids;
    for (const RequestOutput& o : outputs)
      ids.insert(ids.end(), o.token_ids.begin(), o.token_ids.end());
    return ids;
  };
  EXPECT_EQ(tokens(Run(2, prompt, 0, 6)), tokens(Run(3, prompt, std::nullopt, 6)));
}

}  // namespace
}  // namespace kvfold
