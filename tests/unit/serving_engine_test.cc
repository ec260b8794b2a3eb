#include "server/serving/serving_engine.h"

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "tests/testing/stories_fixture.h"

namespace kvfold::serving {
namespace {

using ::testing::HasSubstr;

// A generation's deltas, gathered from the engine thread.
class Collector {
 public:
  DeltaCallback Callback() {
    return [this](GenerationDelta d) {
      std::lock_guard<std::mutex> lock(mu_);
      deltas_.push_back(std::move(d));
      done_ = deltas_.back().finish_reason.has_value();
      cv_.notify_all();
    };
  }
  const std::vector<GenerationDelta>& Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return deltas_;
  }
  bool WaitFirst() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !deltas_.empty(); });
    return true;
  }
  std::string Text() {
    std::string text;
    for (const GenerationDelta& d : Wait()) text += d.text;
    return text;
  }
  std::vector<int32_t> Tokens() {
    std::vector<int32_t> ids;
    for (const GenerationDelta& d : Wait())
      ids.insert(ids.end(), d.token_ids.begin(), d.token_ids.end());
    return ids;
  }
  const GenerationDelta& Last() { return Wait().back(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<GenerationDelta> deltas_;
  bool done_ = false;
};

class ServingEngineTest : public testing::StoriesFixture {
 protected:
  void SetUp() override {
    testing::StoriesFixture::SetUp();
    if (HasFatalFailure()) return;
  }

  std::unique_ptr<ServingEngine> MakeEngine(ServingOptions options = {}) {
    CacheConfig cache;
    cache.memory_bytes = int64_t{4} << 20;
    cache.kv_dtype = DType::kF32;
    SchedulerConfig scheduler;
    scheduler.max_model_len = 256;
    scheduler.eos_token_ids = model_->config().eos_token_ids;
    absl::StatusOr<std::unique_ptr<ServingEngine>> engine =
        ServingEngine::Create(*model_, *ops_, *tokenizer_, cache, scheduler, options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }

  GenerationRequest Greedy(const std::string& prompt, int32_t max_tokens) {
    GenerationRequest r;
    r.prompt_token_ids = *tokenizer_->Encode(prompt, true);
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    return r;
  }
};

TEST_F(ServingEngineTest, StreamedTextIsTheDecodedTokens) {
  std::unique_ptr<ServingEngine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  Collector c;
  GenerationRequest r = Greedy("Once upon a time", 40);
  const std::vector<int32_t> prompt = r.prompt_token_ids;
  ASSERT_TRUE(engine->Submit(r, c.Callback()).ok());
  const std::vector<int32_t> tokens = c.Tokens();
  ASSERT_EQ(tokens.size(), 40u);
  EXPECT_EQ(*c.Last().finish_reason, "length");
  EXPECT_EQ(c.Last().usage.completion_tokens, 40);
  EXPECT_EQ(c.Last().usage.prompt_tokens, static_cast<int32_t>(prompt.size()));
  // The stream's text is the decode of (prompt + output) less the decode of the prompt.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), tokens.begin(), tokens.end());
  const std::string full = *tokenizer_->Decode(all, true);
  const std::string head = *tokenizer_->Decode(prompt, true);
  ASSERT_EQ(full.substr(0, head.size()), head);
  EXPECT_EQ(c.Text(), full.substr(head.size()));
}

TEST_F(ServingEngineTest, StopStringCutsTheTextAndNeverStreamsIt) {
  std::unique_ptr<ServingEngine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  Collector plain;
  ASSERT_TRUE(engine->Submit(Greedy("Once upon a time", 60), plain.Callback()).ok());
  const std::string text = plain.Text();
  ASSERT_GT(text.size(), 30u);
  // A stop string from the middle of the greedy text, likely spanning a token boundary.
  const std::string stop = text.substr(text.size() / 2, 7);
  const size_t cut = text.find(stop);
  Collector stopped;
  GenerationRequest r = Greedy("Once upon a time", 60);
  r.stop = {stop};
  ASSERT_TRUE(engine->Submit(r, stopped.Callback()).ok());
  EXPECT_EQ(stopped.Text(), text.substr(0, cut));
  EXPECT_EQ(*stopped.Last().finish_reason, "stop");
  EXPECT_LT(stopped.Last().usage.completion_tokens, 60);
  for (const GenerationDelta& d : stopped.Wait()) EXPECT_EQ(d.text.find(stop), std::string::npos);
}

TEST_F(ServingEngineTest, AbortEndsTheStreamAndFreesItsBlocks) {
  std::unique_ptr<ServingEngine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  Collector c;
  absl::StatusOr<RequestId> id = engine->Submit(Greedy("Once upon a time", 200), c.Callback());
  ASSERT_TRUE(id.ok());
  c.WaitFirst();
  engine->Abort(*id);
  EXPECT_EQ(*c.Last().finish_reason, "abort");
  EXPECT_LT(c.Last().usage.completion_tokens, 200);
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(engine->num_live(), 0);
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.num_free_blocks, stats.num_blocks);
  engine->Abort(*id);  // finished: a no-op
}

TEST_F(ServingEngineTest, DrainRefusesNewWorkAndFinishesLiveWork) {
  std::unique_ptr<ServingEngine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  EXPECT_TRUE(engine->Ready());
  Collector live;
  ASSERT_TRUE(engine->Submit(Greedy("Once upon a time", 20), live.Callback()).ok());
  engine->StartDrain();
  EXPECT_FALSE(engine->Ready());
  Collector refused;
  absl::StatusOr<RequestId> id = engine->Submit(Greedy("Hello", 4), refused.Callback());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(engine->WaitIdle(absl::Seconds(30)));
  EXPECT_EQ(*live.Last().finish_reason, "length");
}

// A failed executor (a dead tensor-parallel rank) is for good: not ready, new work refused with
// the reason, even when nothing is live.
TEST_F(ServingEngineTest, FailedEngineIsNeverReadyAndRefusesWork) {
  std::unique_ptr<ServingEngine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  EXPECT_TRUE(engine->Ready());
  EXPECT_TRUE(engine->failure().ok());
  engine->Fail(absl::UnavailableError("rank 1 is gone"));
  engine->Fail(absl::DeadlineExceededError("a later failure"));  // the first reason sticks
  EXPECT_FALSE(engine->Ready());
  EXPECT_THAT(engine->failure().message(), HasSubstr("rank 1 is gone"));
  Collector refused;
  absl::StatusOr<RequestId> id = engine->Submit(Greedy("Hello", 4), refused.Callback());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(id.status().message(), HasSubstr("rank 1 is gone"));
  EXPECT_EQ(engine->num_live(), 0);
}

TEST_F(ServingEngineTest, FullQueueRefusesWithResourceExhausted) {
  std::unique_ptr<ServingEngine> engine = MakeEngine({.max_queued_requests = 0});
  ASSERT_NE(engine, nullptr);
  Collector c;
  absl::StatusOr<RequestId> id = engine->Submit(Greedy("Hello", 4), c.Callback());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(id.status().message(), HasSubstr("queue is full"));
  EXPECT_EQ(engine->num_live(), 0);
}

TEST_F(ServingEngineTest, EngineRefusalComesBackAndQueuesNothing) {
  std::unique_ptr<ServingEngine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  Collector c;
  GenerationRequest r = Greedy("Hello", 4);
  r.prompt_token_ids.push_back(model_->config().vocab_size + 5);
  absl::StatusOr<RequestId> id = engine->Submit(r, c.Callback());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->num_live(), 0);
  EXPECT_EQ(engine->num_queued(), 0);
}

TEST_F(ServingEngineTest, MetricsCountWhatTheStreamsSaw) {
  std::unique_ptr<ServingEngine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  metrics::ServingMetrics& m = *engine->AttachMetrics(
      std::make_unique<metrics::ServingMetrics>("stories", engine->MetricsInfo(*model_)));
  Collector a, b;
  ASSERT_TRUE(engine->Submit(Greedy("Once upon a time", 12), a.Callback()).ok());
  ASSERT_TRUE(engine->Submit(Greedy("The cat", 7), b.Callback()).ok());
  const size_t tokens = a.Tokens().size() + b.Tokens().size();
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(10)));
  const std::string text = m.Scrape(engine->Stats());
  EXPECT_THAT(text, HasSubstr(absl::StrCat(
                        "kvfold_generation_tokens_total{model_name=\"stories\"} ", tokens, "\n")));
  EXPECT_THAT(text, HasSubstr("finished_reason=\"length\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("kvfold_request_queue_time_seconds_count{model_name=\"stories\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("kvfold_time_to_first_token_seconds_count{model_name=\"stories\"} 2\n"));
  EXPECT_THAT(text, HasSubstr(absl::StrCat(
                        "kvfold_inter_token_latency_seconds_count{model_name=\"stories\"} ",
                        tokens - 2, "\n")));
  EXPECT_THAT(text, HasSubstr("kvfold_attention_layers{model_name=\"stories\",mode=\"full\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_kv_cache_usage_perc{model_name=\"stories\"} 0\n"));
}

TEST_F(ServingEngineTest, RequestLogHasOneLinePerGenerationAndNoText) {
  ::testing::internal::CaptureStderr();
  {
    std::unique_ptr<ServingEngine> engine = MakeEngine({.request_log = metrics::LogFormat::kText});
    ASSERT_NE(engine, nullptr);
    Collector c;
    GenerationRequest r = Greedy("Once upon a time", 5);
    r.log_id = "cmpl-test:0";
    ASSERT_TRUE(engine->Submit(r, c.Callback()).ok());
    c.Wait();
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("request cmpl-test:0 finished: reason=length prompt_tokens="));
  EXPECT_THAT(err, HasSubstr("completion_tokens=5 "));
  EXPECT_EQ(err.find("Once upon"), std::string::npos);
}

TEST_F(ServingEngineTest, DestructionAbortsLiveGenerations) {
  Collector c;
  {
    std::unique_ptr<ServingEngine> engine = MakeEngine();
    ASSERT_NE(engine, nullptr);
    ASSERT_TRUE(engine->Submit(Greedy("Once upon a time", 250), c.Callback()).ok());
    c.WaitFirst();
  }
  EXPECT_EQ(*c.Last().finish_reason, "abort");
}

}  // namespace
}  // namespace kvfold::serving
