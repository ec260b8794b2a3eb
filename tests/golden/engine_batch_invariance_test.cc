// The batch-invariance test on stories260K: 64 requests with random prompt lengths and
// shared prefixes run through one Engine over a KV pool small enough to force preemption, with a
// token budget small enough to chunk prefills. Every request's tokens must equal what it gets run
// alone (SequenceRunner, same KV dtype): greedy, with seeded sampling, and with the logit
// processors (top-k/p, min-p, penalties that read the prompt and outputs, logit bias, logprobs)
// mixed across requests. Any dependence of a
// sequence's numerics on its batch neighbours, block ids, chunking, prefix-cache reuse or
// recompute after preemption shows up as a different token.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "scheduler/engine.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "worker/checkpoint.h"
#include "worker/kv_cache.h"
#include "worker/model_executor.h"
#include "worker/sampler.h"
#include "worker/sequence_runner.h"

namespace kvfold {
namespace {

constexpr int kNumRequests = 64;
constexpr int32_t kBlockSize = 8;
constexpr int32_t kNumBlocks = 48;  // 384 tokens: a few sequences at a time
constexpr DType kKvDtype = DType::kBF16;

enum class Mode { kGreedy, kSeeded, kFiltered };

// Request i's sampling in kFiltered mode: a different mix of processors per residue.
SamplingParams FilteredSampling(int i) {
  SamplingParams p{.temperature = 0.9f, .seed = static_cast<uint64_t>(11 * i + 3)};
  switch (i % 5) {
    case 0:
      p.top_k = 20;
      break;
    case 1:
      p.top_p = 0.8f;
      p.logprobs = true;
      p.top_logprobs = 3;
      break;
    case 2:  // penalties over prompt and outputs; the worker's history must survive preemption
      p.repetition_penalty = 1.3f;
      p.frequency_penalty = 0.5f;
      p.presence_penalty = 0.3f;
      p.top_k = 50;
      break;
    case 3:  // greedy with penalties
      p.temperature = 0.0f;
      p.repetition_penalty = 1.5f;
      break;
    default:
      p.min_p = 0.1f;
      p.logit_bias = {{5, 2.0f}, {6, -100.0f}};
      break;
  }
  return p;
}

class EngineBatchInvarianceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ops_ = NewCpuOps(2);
    absl::StatusOr<std::unique_ptr<LlamaModel>> model =
        testing::LoadModel(testing::SourcePath("models/stories260K"), *ops_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }

  // Random prompts: BOS, then (for most) one of four shared prefixes, then a random tail.
  std::vector<Request> MakeRequests(Mode mode) {
    std::mt19937 rng(2026);
    std::uniform_int_distribution<int32_t> token(3, model_->config().vocab_size - 1);
    std::vector<std::vector<int32_t>> prefixes(4);
    for (auto& p : prefixes) {
      p.resize(std::uniform_int_distribution<int>(8, 40)(rng));
      for (int32_t& t : p) t = token(rng);
    }
    std::vector<Request> requests(kNumRequests);
    for (int i = 0; i < kNumRequests; ++i) {
      Request& r = requests[i];
      r.id = 100 + i;
      r.prompt_token_ids = {1};
      const int which = std::uniform_int_distribution<int>(-1, 3)(rng);
      if (which >= 0) {
        r.prompt_token_ids.insert(r.prompt_token_ids.end(), prefixes[which].begin(),
                                  prefixes[which].end());
      }
      const int tail = std::uniform_int_distribution<int>(0, 60)(rng);
      for (int j = 0; j < tail; ++j) r.prompt_token_ids.push_back(token(rng));
      r.max_tokens = std::uniform_int_distribution<int>(4, 40)(rng);
      if (mode == Mode::kSeeded) r.sampling = {0.8f, static_cast<uint64_t>(7 * i + 1)};
      if (mode == Mode::kFiltered) r.sampling = FilteredSampling(i);
    }
    return requests;
  }

  // The request alone: prefill, then one token at a time, stopping as the engine does.
  std::vector<int32_t> RunAlone(const Request& r) {
    const ModelConfig& c = model_->config();
    const int32_t prompt = static_cast<int32_t>(r.prompt_token_ids.size());
    SequenceRunner runner(*model_, *ops_, prompt + r.max_tokens, kKvDtype);
    absl::StatusOr<std::vector<float>> logits = runner.Append(r.prompt_token_ids);
    std::vector<int32_t> out;
    while (logits.ok()) {
      const int32_t next = Sample(*logits, r.sampling, out.size(), {r.prompt_token_ids, out});
      out.push_back(next);
      const bool eos = std::count(c.eos_token_ids.begin(), c.eos_token_ids.end(), next) > 0;
      if (eos || static_cast<int32_t>(out.size()) == r.max_tokens) return out;
      logits = runner.Append(absl::MakeConstSpan(&next, 1));
    }
    ADD_FAILURE() << logits.status();
    return out;
  }

  void ExpectBatchInvariant(Mode mode) {
    const std::vector<Request> requests = MakeRequests(mode);
    KvCache cache(*ops_, model_->config(), kNumBlocks, kBlockSize, kKvDtype);
    ModelExecutor executor(*model_, cache);
    SchedulerConfig config;
    config.max_num_batched_tokens = 48;  // prompts of up to 101 tokens prefill in chunks
    config.max_num_seqs = 16;
    config.max_model_len = model_->config().MaxContext();
    config.eos_token_ids.assign(model_->config().eos_token_ids.begin(),
                                model_->config().eos_token_ids.end());

    std::mutex mu;
    std::condition_variable done_cv;
    std::vector<std::vector<int32_t>> tokens(kNumRequests);
    std::vector<std::vector<TokenLogprob>> logprobs(kNumRequests);
    std::vector<std::optional<FinishReason>> finish(kNumRequests);
    int done = 0;
    EngineStats stats;
    {
      Engine engine(config, kNumBlocks, kBlockSize, /*cache_salt=*/0, executor);
      for (const Request& r : requests) {
        const size_t i = r.id - 100;
        ASSERT_TRUE(engine
                        .Submit(r,
                                [&, i](const RequestOutput& o) {
                                  std::lock_guard<std::mutex> lock(mu);
                                  tokens[i].insert(tokens[i].end(), o.token_ids.begin(),
                                                   o.token_ids.end());
                                  logprobs[i].insert(logprobs[i].end(), o.logprobs.begin(),
                                                     o.logprobs.end());
                                  if (o.finish_reason) {
                                    finish[i] = o.finish_reason;
                                    ++done;
                                    done_cv.notify_all();
                                  }
                                })
                        .ok());
      }
      std::unique_lock<std::mutex> lock(mu);
      ASSERT_TRUE(
          done_cv.wait_for(lock, std::chrono::minutes(5), [&] { return done == kNumRequests; }))
          << done << " of " << kNumRequests << " requests finished";
      stats = engine.Stats();
    }
    EXPECT_GT(stats.num_preemptions, 0) << "the pool should force preemption";
    EXPECT_GT(stats.prefix_cache_hits, 0) << "shared prefixes should hit the cache";
    for (int i = 0; i < kNumRequests; ++i) {
      ASSERT_TRUE(finish[i].has_value());
      EXPECT_NE(*finish[i], FinishReason::kError) << "request " << i;
      EXPECT_EQ(tokens[i], RunAlone(requests[i]))
          << "request " << i << " (prompt of " << requests[i].prompt_token_ids.size()
          << " tokens) differs from its run alone";
      const SamplingParams& sampling = requests[i].sampling;
      ASSERT_EQ(logprobs[i].size(), sampling.logprobs ? tokens[i].size() : 0) << "request " << i;
      for (size_t j = 0; j < logprobs[i].size(); ++j) {
        EXPECT_EQ(logprobs[i][j].token_id, tokens[i][j]);
        ASSERT_EQ(logprobs[i][j].top.size(), static_cast<size_t>(sampling.top_logprobs));
        EXPECT_GE(logprobs[i][j].top[0].second, logprobs[i][j].logprob);
      }
    }
  }

  std::unique_ptr<Ops> ops_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(EngineBatchInvarianceTest, GreedyOutputsEqualEachRequestAlone) {
  ExpectBatchInvariant(Mode::kGreedy);
}

TEST_F(EngineBatchInvarianceTest, SeededSampledOutputsEqualEachRequestAlone) {
  ExpectBatchInvariant(Mode::kSeeded);
}

TEST_F(EngineBatchInvarianceTest, FilteredAndPenalizedOutputsEqualEachRequestAlone) {
  ExpectBatchInvariant(Mode::kFiltered);
}

}  // namespace
}  // namespace kvfold
