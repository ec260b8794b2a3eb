// The batch-invariance test on stories260K: 64 requests with random prompt lengths and
// shared prefixes run through one Engine over a KV pool small enough to force preemption, with a
// token budget small enough to chunk prefills. Every request's tokens must equal what it gets run
// alone (SequenceRunner, same KV dtype), greedy and with seeded sampling. Any dependence of a
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

class EngineBatchInvarianceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ops_ = NewCpuOps(2);
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
        Checkpoint::Open(testing::SourcePath("models/stories260K"));
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(*std::move(ckpt), *ops_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }

  // Random prompts: BOS, then (for most) one of four shared prefixes, then a random tail.
  std::vector<Request> MakeRequests(bool sampled) {
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
      if (sampled) r.sampling = {0.8f, static_cast<uint64_t>(7 * i + 1)};
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
      const int32_t next = Sample(*logits, r.sampling, out.size());
      out.push_back(next);
      const bool eos = std::count(c.eos_token_ids.begin(), c.eos_token_ids.end(), next) > 0;
      if (eos || static_cast<int32_t>(out.size()) == r.max_tokens) return out;
      logits = runner.Append(absl::MakeConstSpan(&next, 1));
    }
    ADD_FAILURE() << logits.status();
    return out;
  }

  void ExpectBatchInvariant(bool sampled) {
    const std::vector<Request> requests = MakeRequests(sampled);
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
    }
  }

  std::unique_ptr<Ops> ops_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(EngineBatchInvarianceTest, GreedyOutputsEqualEachRequestAlone) {
  ExpectBatchInvariant(/*sampled=*/false);
}

TEST_F(EngineBatchInvarianceTest, SeededSampledOutputsEqualEachRequestAlone) {
  ExpectBatchInvariant(/*sampled=*/true);
}

}  // namespace
}  // namespace kvfold
