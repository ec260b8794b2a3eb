// ModelExecutor on stories260K: a step plan mixing sequences, chunked prefill and decodes over
// scrambled block ids gives, bit for bit, the logits and tokens each sequence gets alone through
// SequenceRunner (the ops.h determinism contract, end to end). Bad plans are errors, not crashes.
#include "worker/model_executor.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "worker/checkpoint.h"
#include "worker/sampler.h"
#include "worker/sequence_runner.h"

namespace kvfold {
namespace {

using ::testing::HasSubstr;

constexpr int32_t kBlockSize = 4;
constexpr int32_t kNumBlocks = 64;

class ModelExecutorTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    ops_ = NewCpuOps(2);
    absl::StatusOr<std::unique_ptr<LlamaModel>> model =
        testing::LoadModel(testing::SourcePath("models/stories260K"), *ops_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    cache_ = std::make_unique<KvCache>(*ops_, model_->config(), kNumBlocks, kBlockSize, GetParam());
    executor_ = std::make_unique<ModelExecutor>(*model_, *cache_);
  }

  std::unique_ptr<Ops> ops_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<ModelExecutor> executor_;
};

// One sequence as the test drives it: its tokens, its blocks and the reference runner.
struct Seq {
  RequestId id;
  std::vector<int32_t> tokens;  // prompt, then sampled tokens
  std::vector<BlockId> blocks;
  int32_t computed = 0;
  SamplingParams sampling;
  int32_t num_outputs = 0;
};

TEST_P(ModelExecutorTest, BatchedChunksMatchEachSequenceAlone) {
  std::mt19937 rng(5);
  std::vector<BlockId> pool(kNumBlocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);  // scrambled, interleaved block ids
  std::uniform_int_distribution<int32_t> token(3, 511);
  std::vector<Seq> seqs = {
      {7, {}, {}, 0, {0.0f, 0}}, {3, {}, {}, 0, {0.8f, 42}}, {11, {}, {}, 0, {0.0f, 0}}};
  const int prompt_len[] = {37, 5, 20};
  for (int s = 0; s < 3; ++s) {
    seqs[s].tokens.push_back(1);  // BOS
    for (int i = 1; i < prompt_len[s]; ++i) seqs[s].tokens.push_back(token(rng));
    for (int b = 0; b < 16; ++b) seqs[s].blocks.push_back(pool[b * 3 + s]);
  }
  std::vector<std::unique_ptr<SequenceRunner>> alone;
  for (int s = 0; s < 3; ++s) {
    alone.push_back(std::make_unique<SequenceRunner>(*model_, *ops_, 64, GetParam()));
  }
  // Per step, how many tokens each sequence computes (0: not scheduled): chunked prefill of the
  // 37-token prompt (16 + 21), a prompt split 3 + 2 beside decodes, then decodes.
  const std::vector<std::vector<int32_t>> steps = {{16, 3, 20}, {21, 2, 1}, {1, 1, 1}, {1, 0, 1}};
  for (const std::vector<int32_t>& step : steps) {
    StepPlan plan;
    std::vector<int> sampled_seqs;
    for (int s = 0; s < 3; ++s) {
      Seq& q = seqs[s];
      if (step[s] == 0) continue;
      ScheduledChunk c;
      c.request_id = q.id;
      c.start_position = q.computed;
      c.token_ids.assign(q.tokens.begin() + q.computed, q.tokens.begin() + q.computed + step[s]);
      const int32_t blocks = (q.computed + step[s] + kBlockSize - 1) / kBlockSize;
      c.block_table.assign(q.blocks.begin(), q.blocks.begin() + blocks);
      c.sample = q.computed + step[s] == static_cast<int32_t>(q.tokens.size());
      c.output_index = q.num_outputs;
      c.sampling = q.sampling;
      if (c.sample) sampled_seqs.push_back(s);
      plan.chunks.push_back(std::move(c));
    }
    absl::StatusOr<StepResult> result = executor_->Execute(plan);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->sampled.size(), sampled_seqs.size());
    const size_t vocab = model_->config().vocab_size;
    ASSERT_EQ(executor_->last_logits().size(), sampled_seqs.size() * vocab);
    // Run the same tokens through each sequence's own runner and compare.
    size_t row = 0;
    for (int s = 0; s < 3; ++s) {
      Seq& q = seqs[s];
      if (step[s] == 0) continue;
      absl::StatusOr<std::vector<float>> ref = alone[s]->Append(
          absl::MakeConstSpan(q.tokens.data() + q.computed, static_cast<size_t>(step[s])));
      ASSERT_TRUE(ref.ok()) << ref.status();
      q.computed += step[s];
      if (q.computed != static_cast<int32_t>(q.tokens.size())) continue;
      const std::vector<float> got(executor_->last_logits().begin() + row * vocab,
                                   executor_->last_logits().begin() + (row + 1) * vocab);
      EXPECT_TRUE(got == *ref) << "sequence " << s << " logits differ at length " << q.computed;
      EXPECT_EQ(result->sampled[row].request_id, q.id);
      EXPECT_EQ(result->sampled[row].token_id, Sample(*ref, q.sampling, q.num_outputs));
      const float logprob = result->sampled[row].logprob;
      if (q.sampling.logprobs) {
        EXPECT_EQ(logprob, LogProbability(*ref, result->sampled[row].token_id));
        EXPECT_LE(logprob, 0.0f);
        EXPECT_GT(logprob, -30.0f);
      } else {
        EXPECT_EQ(logprob, 0.0f) << "not asked for";
      }
      q.tokens.push_back(result->sampled[row].token_id);
      ++q.num_outputs;
      ++row;
    }
  }
  EXPECT_EQ(seqs[0].num_outputs, 3);
  EXPECT_EQ(seqs[1].num_outputs, 2);
}

// A one-chunk plan to break in the tests below.
StepPlan OneChunk(std::vector<BlockId> blocks, int32_t start, int32_t n) {
  ScheduledChunk c;
  c.request_id = 1;
  c.token_ids.assign(n, 5);
  c.start_position = start;
  c.block_table = std::move(blocks);
  c.sample = true;
  return {{c}};
}

TEST_P(ModelExecutorTest, BadPlansAreErrors) {
  auto error = [&](const StepPlan& plan) {
    absl::StatusOr<StepResult> r = executor_->Execute(plan);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(r.status().message());
  };
  EXPECT_THAT(error(StepPlan{}), HasSubstr("empty"));
  EXPECT_THAT(error(OneChunk({kNumBlocks}, 0, 2)), HasSubstr("outside the pool"));
  EXPECT_THAT(error(OneChunk({-1}, 0, 2)), HasSubstr("outside the pool"));
  EXPECT_THAT(error(OneChunk({0}, 0, 5)), HasSubstr("do not cover"));
  EXPECT_THAT(error(OneChunk({0}, 0, 0)), HasSubstr("does not fit"));
  EXPECT_THAT(error(OneChunk(std::vector<BlockId>(130, 0), 510, 3)), HasSubstr("context"));
  StepPlan twice = OneChunk({0}, 0, 2);
  twice.chunks.push_back(twice.chunks[0]);
  EXPECT_THAT(error(twice), HasSubstr("two chunks"));
  StepPlan shared = OneChunk({0}, 0, 2);
  shared.chunks.push_back(shared.chunks[0]);
  shared.chunks[1].request_id = 2;
  EXPECT_THAT(error(shared), HasSubstr("slot"));
  StepPlan bad_token = OneChunk({0}, 0, 1);
  bad_token.chunks[0].token_ids[0] = 100000;
  EXPECT_THAT(error(bad_token), HasSubstr("token id"));
  // The executor still works after rejecting plans.
  EXPECT_TRUE(executor_->Execute(OneChunk({9, 4}, 0, 6)).ok());
}

// Penalties read the history the executor keeps per request: built from chunk tokens, rewritten
// from start_position on recompute, filled by context_token_ids, dropped by StepPlan::finished.
TEST_P(ModelExecutorTest, PenaltiesReadTheRequestsTokenHistory) {
  StepPlan plan = OneChunk({0, 1}, 0, 4);
  ScheduledChunk& c = plan.chunks[0];
  c.token_ids = {5, 6, 7, 8};
  c.sampling.repetition_penalty = 1e6f;  // greedy never repeats a seen token with logit > 0
  c.sampling.presence_penalty = 2.0f;
  absl::StatusOr<StepResult> r = executor_->Execute(plan);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<float> logits(executor_->last_logits().begin(), executor_->last_logits().end());
  const std::vector<int32_t> prompt = {5, 6, 7, 8};
  EXPECT_EQ(r->sampled[0].token_id, Sample(logits, c.sampling, 0, {prompt, {}}));
  // Decode with the sampled token as output 0: output penalties apply to it.
  const int32_t out0 = r->sampled[0].token_id;
  c.token_ids = {out0};
  c.start_position = 4;
  c.output_index = 1;
  r = executor_->Execute(plan);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<float> logits1(executor_->last_logits().begin(),
                                   executor_->last_logits().end());
  const std::vector<int32_t> outputs = {out0};
  EXPECT_EQ(r->sampled[0].token_id, Sample(logits1, c.sampling, 1, {prompt, outputs}));
  // Recompute from 2 rewrites the history from there.
  c.token_ids = {9, 10, out0};
  c.start_position = 2;
  ASSERT_TRUE(executor_->Execute(plan).ok());
  // Finished: the history is gone, so a chunk past position 0 needs context_token_ids.
  plan.finished = {1};
  c.token_ids = {out0};
  c.start_position = 4;
  r = executor_->Execute(plan);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("knows 0 of its tokens"));
  c.context_token_ids = {5, 6};
  r = executor_->Execute(plan);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("context tokens"));
  c.context_token_ids = {5, 6, 7, 8};
  EXPECT_TRUE(executor_->Execute(plan).ok());
}

INSTANTIATE_TEST_SUITE_P(KvDtypes, ModelExecutorTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

}  // namespace
}  // namespace kvfold
