// The engine loop against the stand-in model: concurrent submitters and aborters, executor
// failures, shutdown with live requests, and callbacks that re-enter the engine. Run under TSan
// in CI.
#include "scheduler/engine.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_executor.h"

namespace kvfold {
namespace {

using ::kvfold::testing::FakeExecutor;
using ::kvfold::testing::RunAlone;
using ::testing::HasSubstr;

constexpr int32_t kBlockSize = 4;
constexpr auto kTimeout = std::chrono::seconds(60);

SchedulerConfig Config() {
  SchedulerConfig config;
  config.max_num_batched_tokens = 32;
  config.max_num_seqs = 16;
  config.eos_token_ids = {2};
  return config;
}

Request Req(RequestId id, std::vector<int32_t> prompt, int32_t max_tokens) {
  Request request;
  request.id = id;
  request.prompt_token_ids = std::move(prompt);
  request.max_tokens = max_tokens;
  return request;
}

struct Stream {
  std::vector<int32_t> tokens;
  int32_t num_finals = 0;
  bool output_after_final = false;
  std::optional<FinishReason> finish;
  std::string error;
};

// Collects every request's deltas from the engine thread; tests wait for a number of finals.
class Collector {
 public:
  Engine::OutputCallback For(RequestId id) {
    return [this, id](const RequestOutput& out) {
      std::lock_guard<std::mutex> lock(mu_);
      Stream& stream = streams_[id];
      if (stream.num_finals > 0) stream.output_after_final = true;
      stream.tokens.insert(stream.tokens.end(), out.token_ids.begin(), out.token_ids.end());
      if (out.finish_reason) {
        ++stream.num_finals;
        stream.finish = out.finish_reason;
        stream.error = out.error;
        ++num_finals_;
        done_.notify_all();
      }
    };
  }

  bool WaitForFinals(int32_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return done_.wait_for(lock, kTimeout, [&] { return num_finals_ >= n; });
  }

  std::map<RequestId, Stream> streams() const {
    std::lock_guard<std::mutex> lock(mu_);
    return streams_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable done_;
  std::map<RequestId, Stream> streams_;
  int32_t num_finals_ = 0;
};

TEST(EngineTest, ConcurrentSubmittersAndAbortersFinishEveryRequestOnce) {
  constexpr int kNumThreads = 6;
  constexpr int kPerThread = 40;
  constexpr int32_t kNumBlocks = 48;  // tight: usually preempts
  FakeExecutor executor(kNumBlocks, kBlockSize);
  executor.set_delay(std::chrono::microseconds(50));
  Collector collector;
  std::mutex requests_mu;
  std::map<RequestId, Request> requests;
  std::set<RequestId> aborted;
  {
    Engine engine(Config(), kNumBlocks, kBlockSize, /*cache_salt=*/0, executor);
    std::vector<std::thread> threads;
    for (int t = 0; t < kNumThreads; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(t + 1);
        auto uniform = [&](int lo, int hi) {
          return std::uniform_int_distribution<int>(lo, hi)(rng);
        };
        for (int i = 0; i < kPerThread; ++i) {
          const RequestId id = t * 1000 + i;
          std::vector<int32_t> prompt;  // shared prefixes across threads
          for (int j = uniform(0, 2) * kBlockSize; j > 0; --j) prompt.push_back(10 + j);
          for (int j = uniform(1, 6); j > 0; --j) prompt.push_back(uniform(3, 9));
          Request request = Req(id, prompt, uniform(1, 16));
          {
            std::lock_guard<std::mutex> lock(requests_mu);
            requests[id] = request;
          }
          ASSERT_TRUE(engine.Submit(request, collector.For(id)).ok());
          if (uniform(0, 4) == 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 300)));
            engine.Abort(id);
            std::lock_guard<std::mutex> lock(requests_mu);
            aborted.insert(id);
          }
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    ASSERT_TRUE(collector.WaitForFinals(kNumThreads * kPerThread));
    const EngineStats stats = engine.Stats();
    EXPECT_EQ(stats.num_running + stats.num_waiting, 0);
    EXPECT_EQ(stats.num_free_blocks, kNumBlocks);
    EXPECT_GT(stats.num_steps, 0);
    // Whether this run preempted or hit the prefix cache depends on thread timing; both are
    // asserted deterministically in scheduler_test.cc and engine_batch_invariance_test.cc.
  }
  const std::map<RequestId, Stream> streams = collector.streams();
  ASSERT_EQ(streams.size(), requests.size());
  for (const auto& [id, stream] : streams) {
    SCOPED_TRACE(absl::StrCat("request ", id));
    EXPECT_EQ(stream.num_finals, 1);
    EXPECT_FALSE(stream.output_after_final);
    ASSERT_TRUE(stream.finish.has_value());
    if (*stream.finish == FinishReason::kAbort) {
      EXPECT_TRUE(aborted.contains(id));
      continue;
    }
    EXPECT_NE(*stream.finish, FinishReason::kError);
    EXPECT_EQ(stream.tokens, RunAlone(Config(), kNumBlocks, kBlockSize, requests.at(id)));
  }
}

// The first step waits for the test (so later submissions queue up), the second one fails.
class FailSecondStep : public Executor {
 public:
  explicit FailSecondStep(FakeExecutor& model) : model_(model) {}

  absl::StatusOr<StepResult> Execute(const StepPlan& plan) override {
    std::unique_lock<std::mutex> lock(mu_);
    const int call = ++num_calls_;
    if (call == 1) released_.wait(lock, [&] { return release_; });
    if (call == 2) return absl::UnavailableError("device lost");
    return model_.Execute(plan);
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    release_ = true;
    released_.notify_all();
  }

 private:
  FakeExecutor& model_;
  std::mutex mu_;
  std::condition_variable released_;
  bool release_ = false;
  int num_calls_ = 0;
};

TEST(EngineTest, ExecutorFailureEndsLiveRequestsAndServingGoesOn) {
  constexpr int32_t kNumBlocks = 32;
  FakeExecutor model(kNumBlocks, kBlockSize);
  FailSecondStep executor(model);
  Collector collector;
  Engine engine(Config(), kNumBlocks, kBlockSize, 0, executor);
  ASSERT_TRUE(engine.Submit(Req(1, {5, 6, 7}, 8), collector.For(1)).ok());
  ASSERT_TRUE(engine.Submit(Req(2, {5, 6, 8}, 8), collector.For(2)).ok());
  ASSERT_TRUE(engine.Submit(Req(3, {5, 6, 9}, 8), collector.For(3)).ok());
  executor.Release();
  ASSERT_TRUE(collector.WaitForFinals(3));
  const Request after = Req(4, {5, 6, 7}, 4);
  ASSERT_TRUE(engine.Submit(after, collector.For(4)).ok());
  ASSERT_TRUE(collector.WaitForFinals(4));

  const std::map<RequestId, Stream> streams = collector.streams();
  for (RequestId id : {1, 2, 3}) {
    EXPECT_EQ(streams.at(id).finish, FinishReason::kError) << id;
    EXPECT_THAT(streams.at(id).error, HasSubstr("device lost"));
    EXPECT_EQ(streams.at(id).num_finals, 1);
  }
  EXPECT_EQ(streams.at(4).finish, FinishReason::kLength);
  EXPECT_EQ(streams.at(4).tokens, RunAlone(Config(), kNumBlocks, kBlockSize, after));
  EXPECT_EQ(engine.Stats().num_free_blocks, kNumBlocks);
}

// Wraps the fake model and breaks the results it returns in one way.
enum class Corruption { kMissingToken, kSwappedTokens, kShortPromptLogprobs, kExtraPromptLogprobs };

class CorruptingExecutor : public Executor {
 public:
  CorruptingExecutor(FakeExecutor& model, Corruption corruption)
      : model_(model), corruption_(corruption) {}

  absl::StatusOr<StepResult> Execute(const StepPlan& plan) override {
    absl::StatusOr<StepResult> result = model_.Execute(plan);
    if (!result.ok()) return result;
    std::vector<SampledToken>& sampled = result->sampled;
    std::vector<ChunkPromptLogprobs>& scored = result->prompt_logprobs;
    switch (corruption_) {
      case Corruption::kMissingToken:
        if (!sampled.empty()) sampled.pop_back();
        break;
      case Corruption::kSwappedTokens:
        if (sampled.size() >= 2) std::swap(sampled[0], sampled[1]);
        break;
      case Corruption::kShortPromptLogprobs:
        if (!scored.empty() && !scored[0].logprobs.empty()) scored[0].logprobs.pop_back();
        break;
      case Corruption::kExtraPromptLogprobs:
        if (!plan.chunks.empty())
          scored.push_back(ChunkPromptLogprobs{.request_id = plan.chunks.front().request_id});
        break;
    }
    return result;
  }

 private:
  FakeExecutor& model_;
  Corruption corruption_;
};

class EngineResultCheckTest : public ::testing::TestWithParam<Corruption> {};

// A result that does not pair up with the plan's chunks fails the step's requests with an error
// naming the executor, frees their blocks, and the engine keeps serving.
TEST_P(EngineResultCheckTest, MismatchedResultsFailTheStep) {
  constexpr int32_t kNumBlocks = 32;
  FakeExecutor model(kNumBlocks, kBlockSize);
  CorruptingExecutor executor(model, GetParam());
  Collector collector;
  Engine engine(Config(), kNumBlocks, kBlockSize, 0, executor);
  for (RequestId id : {1, 2}) {
    Request request = Req(id, {5, 6, static_cast<int32_t>(6 + id)}, 4);
    request.prompt_logprobs = 1;
    ASSERT_TRUE(engine.Submit(request, collector.For(id)).ok());
  }
  ASSERT_TRUE(collector.WaitForFinals(2));
  for (const auto& [id, stream] : collector.streams()) {
    EXPECT_EQ(stream.finish, FinishReason::kError) << id;
    EXPECT_THAT(stream.error, HasSubstr("the executor returned")) << id;
  }
  EXPECT_EQ(engine.Stats().num_free_blocks, kNumBlocks);
}

INSTANTIATE_TEST_SUITE_P(Corruptions, EngineResultCheckTest,
                         ::testing::Values(Corruption::kMissingToken, Corruption::kSwappedTokens,
                                           Corruption::kShortPromptLogprobs,
                                           Corruption::kExtraPromptLogprobs));

// The step observer sees every computed token once and each request's first scheduling once,
// before that request's first output.
TEST(EngineTest, StepObserverCountsTokensAndFirstSchedulings) {
  constexpr int32_t kNumBlocks = 64;
  FakeExecutor executor(kNumBlocks, kBlockSize);
  Collector collector;
  std::mutex mu;
  int64_t tokens = 0;
  std::map<RequestId, int> first_scheduled;
  std::atomic<bool> output_before_scheduled{false};
  {
    Engine engine(Config(), kNumBlocks, kBlockSize, /*cache_salt=*/0, executor,
                  [&](const StepInfo& info) {
                    std::lock_guard<std::mutex> lock(mu);
                    tokens += info.num_tokens;
                    EXPECT_GE(info.seconds, 0.0);
                    EXPECT_GT(info.num_sequences, 0);
                    for (RequestId id : info.first_scheduled) ++first_scheduled[id];
                  });
    for (RequestId id = 1; id <= 5; ++id) {
      Engine::OutputCallback inner = collector.For(id);
      ASSERT_TRUE(engine
                      .Submit(Req(id, {5, 6, 7, static_cast<int32_t>(id)}, 4),
                              [&, id, inner](const RequestOutput& out) {
                                {
                                  std::lock_guard<std::mutex> lock(mu);
                                  if (!first_scheduled.contains(id)) output_before_scheduled = true;
                                }
                                inner(out);
                              })
                      .ok());
    }
    ASSERT_TRUE(collector.WaitForFinals(5));
  }
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_FALSE(output_before_scheduled);
  ASSERT_EQ(first_scheduled.size(), 5u);
  for (const auto& [id, count] : first_scheduled) EXPECT_EQ(count, 1) << id;
  int64_t expected = 0;  // each prompt once, then one token per decode step after the first
  for (const auto& [id, stream] : collector.streams()) {
    expected += 4 + static_cast<int64_t>(stream.tokens.size()) - 1;
  }
  EXPECT_EQ(tokens, expected);
}

TEST(EngineTest, DestructorAbortsLiveRequests) {
  constexpr int32_t kNumBlocks = 256;
  FakeExecutor executor(kNumBlocks, kBlockSize);
  executor.set_delay(std::chrono::microseconds(200));
  Collector collector;
  {
    Engine engine(Config(), kNumBlocks, kBlockSize, 0, executor);
    for (RequestId id = 1; id <= 40; ++id) {
      ASSERT_TRUE(
          engine.Submit(Req(id, {3, 4, static_cast<int32_t>(id)}, 500), collector.For(id)).ok());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const std::map<RequestId, Stream> streams = collector.streams();
  ASSERT_EQ(streams.size(), 40u);
  for (const auto& [id, stream] : streams) {
    EXPECT_EQ(stream.num_finals, 1) << id;
    EXPECT_EQ(stream.finish, FinishReason::kAbort) << id;
  }
}

TEST(EngineTest, SubmitRejectsBadRequestsWithoutCallingBack) {
  FakeExecutor executor(16, kBlockSize);
  Collector collector;
  Engine engine(Config(), 16, kBlockSize, 0, executor);
  EXPECT_EQ(engine.Submit(Req(1, {}, 4), collector.For(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Submit(Req(2, {1, 2}, 0), collector.For(2)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Submit(Req(3, std::vector<int32_t>(64, 5), 1), collector.For(3)).code(),
            absl::StatusCode::kInvalidArgument);  // larger than the pool
  EXPECT_EQ(engine.Submit(Req(4, {1, 3}, 4), nullptr).code(), absl::StatusCode::kInvalidArgument);
  // Request 5's first delta holds the engine thread until the duplicate is checked, so the id is
  // certainly still in use (otherwise it may finish first).
  std::promise<void> duplicate_checked;
  std::shared_future<void> checked = duplicate_checked.get_future().share();
  Engine::OutputCallback record = collector.For(5);
  ASSERT_TRUE(engine
                  .Submit(Req(5, {1, 3}, 4),
                          [record, checked](const RequestOutput& out) {
                            checked.wait();
                            record(out);
                          })
                  .ok());
  EXPECT_EQ(engine.Submit(Req(5, {1, 3}, 4), collector.For(5)).code(),
            absl::StatusCode::kInvalidArgument);  // id in use
  duplicate_checked.set_value();
  ASSERT_TRUE(collector.WaitForFinals(1));
  const std::map<RequestId, Stream> streams = collector.streams();
  EXPECT_EQ(streams.size(), 1u);
  EXPECT_EQ(streams.at(5).tokens.size(), 4u);
}

// A callback may submit (even reusing its own id) and abort: they only enqueue.
TEST(EngineTest, CallbacksMayReenterTheEngine) {
  FakeExecutor executor(32, kBlockSize);
  Collector collector;
  Engine engine(Config(), 32, kBlockSize, 0, executor);
  std::atomic<int> num_chained{0};
  std::function<void(const RequestOutput&)> chain = [&](const RequestOutput& out) {
    collector.For(out.id + 100 * num_chained)(out);
    if (!out.finish_reason || num_chained.load() >= 5) return;
    ++num_chained;
    engine.Abort(12345);  // unknown: ignored
    EXPECT_TRUE(engine.Submit(Req(out.id, {7, 8, 9}, 2), chain).ok());
  };
  ASSERT_TRUE(engine.Submit(Req(1, {7, 8, 9}, 2), chain).ok());
  ASSERT_TRUE(collector.WaitForFinals(6));
  const std::map<RequestId, Stream> streams = collector.streams();
  EXPECT_EQ(streams.size(), 6u);
  for (const auto& [id, stream] : streams) EXPECT_EQ(stream.finish, FinishReason::kLength) << id;
}

}  // namespace
}  // namespace kvfold
