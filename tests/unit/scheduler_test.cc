// Table-driven step simulations of the Scheduler (as TensorRT-LLM's scheduler tests do): each row
// adds arrivals and aborts, runs one Schedule -> FakeExecutor -> Update step, and states the
// chunks it expects ("<id>@<start>+<tokens>", "*" when the chunk samples), the requests that
// finish, and the queue and pool sizes after the step. Every request that ends on stop or length
// must also have produced the tokens it produces when run alone (the fake model reads its
// context back through the block tables, so a wrong table or cache hit changes the tokens).
#include "scheduler/scheduler.h"

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_executor.h"

// The step tables name only the fields a row sets; GCC 12 warns about the others even though
// designated initializers leave them at their defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace kvfold {
namespace {

using ::kvfold::testing::FakeExecutor;
using ::kvfold::testing::ForcedToken;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int32_t kBlockSize = 4;
constexpr int32_t kEos = 2;

// A prompt of n tokens that no other request's prompt shares: id * 100 + [0, n).
std::vector<int32_t> PromptOf(RequestId id, int32_t n) {
  std::vector<int32_t> tokens(n);
  for (int32_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>(id) * 100 + i;
  return tokens;
}

Request Req(RequestId id, std::vector<int32_t> prompt, int32_t max_tokens, int32_t priority = 0) {
  Request request;
  request.id = id;
  request.prompt_token_ids = std::move(prompt);
  request.max_tokens = max_tokens;
  request.priority = priority;
  return request;
}

Request Req(RequestId id, int32_t prompt_len, int32_t max_tokens, int32_t priority = 0) {
  return Req(id, PromptOf(id, prompt_len), max_tokens, priority);
}

struct Step {
  std::vector<Request> arrivals;       // added before Schedule
  std::vector<RequestId> aborts;       // before Schedule
  std::string chunks;                  // the plan
  std::vector<RequestId> late_aborts;  // between Schedule and Update
  std::string finished;                // "<id>:<reason>" after Update, in output order
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t num_free_blocks = 0;
};

struct Collected {
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> prompt_logprobs;
  std::optional<FinishReason> finish;
  Usage usage;
};

std::string Render(const StepPlan& plan) {
  return absl::StrJoin(plan.chunks, " ", [](std::string* out, const ScheduledChunk& c) {
    absl::StrAppend(out, c.request_id, "@", c.start_position, "+", c.token_ids.size(),
                    c.sample ? "*" : "", c.prompt_logprobs.has_value() ? "p" : "");
  });
}

class SchedulerSim {
 public:
  SchedulerSim(const SchedulerConfig& config, int32_t num_blocks,
               std::vector<ForcedToken> forced = {})
      : config_(config),
        blocks_(num_blocks, kBlockSize),
        scheduler_(config, blocks_),
        executor_(num_blocks, kBlockSize),
        forced_(std::move(forced)) {
    for (const ForcedToken& f : forced_) executor_.ForceToken(f.id, f.output_index, f.token);
  }

  void Run(const std::vector<Step>& steps) {
    for (size_t i = 0; i < steps.size(); ++i) {
      SCOPED_TRACE(absl::StrCat("step ", i));
      RunStep(steps[i]);
      if (::testing::Test::HasFailure()) return;
    }
  }

  void RunStep(const Step& step) {
    for (const Request& request : step.arrivals) {
      ASSERT_TRUE(scheduler_.Add(request).ok());
      requests_[request.id] = request;
    }
    for (RequestId id : step.aborts) scheduler_.Abort(id);
    last_plan_ = scheduler_.Schedule();
    EXPECT_EQ(Render(last_plan_), step.chunks);
    for (const ScheduledChunk& chunk : last_plan_.chunks) CheckChunk(chunk);
    absl::StatusOr<StepResult> result = executor_.Execute(last_plan_);
    ASSERT_TRUE(result.ok()) << result.status();
    for (RequestId id : step.late_aborts) scheduler_.Abort(id);
    std::vector<std::string> finished;
    for (const RequestOutput& out : scheduler_.Update(last_plan_, *result)) {
      Collect(out);
      if (out.finish_reason) {
        finished.push_back(absl::StrCat(out.id, ":", FinishReasonName(*out.finish_reason)));
      }
    }
    EXPECT_EQ(absl::StrJoin(finished, " "), step.finished);
    EXPECT_EQ(scheduler_.num_running(), step.num_running);
    EXPECT_EQ(scheduler_.num_waiting(), step.num_waiting);
    EXPECT_EQ(blocks_.num_free_blocks(), step.num_free_blocks);
    blocks_.CheckInvariants();
  }

  // A step with no expectations beyond the per-chunk checks and the pool's invariants.
  void StepUnchecked(const std::vector<Request>& arrivals, const std::vector<RequestId>& aborts) {
    for (const Request& request : arrivals) {
      ASSERT_TRUE(scheduler_.Add(request).ok());
      requests_[request.id] = request;
    }
    for (RequestId id : aborts) scheduler_.Abort(id);
    last_plan_ = scheduler_.Schedule();
    for (const ScheduledChunk& chunk : last_plan_.chunks) CheckChunk(chunk);
    absl::StatusOr<StepResult> result = executor_.Execute(last_plan_);
    ASSERT_TRUE(result.ok()) << result.status();
    for (const RequestOutput& out : scheduler_.Update(last_plan_, *result)) Collect(out);
    blocks_.CheckInvariants();
  }

  // Requests that ended on stop or length produced what they produce alone.
  void ExpectSoloOutputs() const {
    for (const auto& [id, got] : outputs_) {
      if (got.finish != FinishReason::kStop && got.finish != FinishReason::kLength) continue;
      EXPECT_EQ(got.tokens, Solo(requests_.at(id))) << "request " << id;
    }
  }

  const Collected& output(RequestId id) const { return outputs_.at(id); }
  const StepPlan& last_plan() const { return last_plan_; }
  Scheduler& scheduler() { return scheduler_; }
  BlockManager& blocks() { return blocks_; }

 private:
  // The chunk carries the request's own tokens and output index.
  void CheckChunk(const ScheduledChunk& chunk) {
    const Request& request = requests_.at(chunk.request_id);
    std::vector<int32_t> known = request.prompt_token_ids;
    const std::vector<int32_t>& produced = outputs_[chunk.request_id].tokens;
    known.insert(known.end(), produced.begin(), produced.end());
    const size_t end = chunk.start_position + chunk.token_ids.size();
    ASSERT_LE(end, known.size());
    EXPECT_EQ(chunk.token_ids,
              std::vector<int32_t>(known.begin() + chunk.start_position, known.begin() + end));
    EXPECT_EQ(chunk.sample, end == known.size());
    EXPECT_EQ(chunk.output_index, static_cast<int32_t>(produced.size()));
    EXPECT_EQ(chunk.block_table.size(), static_cast<size_t>(blocks_.BlocksFor(end)));
    if (chunk.prompt_logprobs.has_value()) {
      // Scored chunks lie in the prompt and carry the prompt token after their last row.
      EXPECT_EQ(chunk.prompt_logprobs, request.prompt_logprobs);
      EXPECT_LE(end, request.prompt_token_ids.size());
      EXPECT_EQ(chunk.next_prompt_token,
                end < request.prompt_token_ids.size() ? request.prompt_token_ids[end] : -1);
    }
  }

  void Collect(const RequestOutput& out) {
    Collected& got = outputs_[out.id];
    EXPECT_FALSE(got.finish.has_value()) << "request " << out.id << " output after its end";
    const bool wants_logprobs = requests_.at(out.id).sampling.logprobs;
    EXPECT_EQ(out.logprobs.size(), wants_logprobs ? out.token_ids.size() : 0);
    for (const TokenLogprob& lp : out.logprobs) EXPECT_EQ(lp.logprob, FakeExecutor::kLogprob);
    // Prompt logprobs come once, with the first token.
    if (!out.prompt_logprobs.empty()) {
      EXPECT_TRUE(got.tokens.empty() && !out.token_ids.empty()) << "request " << out.id;
    }
    got.prompt_logprobs.insert(got.prompt_logprobs.end(), out.prompt_logprobs.begin(),
                               out.prompt_logprobs.end());
    got.tokens.insert(got.tokens.end(), out.token_ids.begin(), out.token_ids.end());
    got.finish = out.finish_reason;
    if (out.finish_reason) {
      got.usage = out.usage;
      EXPECT_EQ(out.usage.completion_tokens, static_cast<int32_t>(got.tokens.size()));
    }
  }

  std::vector<int32_t> Solo(const Request& request) const {
    return ::kvfold::testing::RunAlone(config_, blocks_.num_blocks(), kBlockSize, request, forced_);
  }

  const SchedulerConfig config_;
  BlockManager blocks_;
  Scheduler scheduler_;
  FakeExecutor executor_;
  std::vector<ForcedToken> forced_;
  std::map<RequestId, Request> requests_;
  std::map<RequestId, Collected> outputs_;
  StepPlan last_plan_;
};

SchedulerConfig Config(int32_t max_num_batched_tokens, int32_t max_num_seqs,
                       int32_t max_model_len = 0) {
  SchedulerConfig config;
  config.max_num_batched_tokens = max_num_batched_tokens;
  config.max_num_seqs = max_num_seqs;
  config.max_model_len = max_model_len;
  config.eos_token_ids = {kEos};
  return config;
}

TEST(SchedulerTest, PrefillThenDecodeUntilMaxTokens) {
  SchedulerSim sim(Config(16, 4), 16);
  sim.Run({
      {.arrivals = {Req(1, 6, 3)}, .chunks = "1@0+6*", .num_running = 1, .num_free_blocks = 14},
      {.chunks = "1@6+1*", .num_running = 1, .num_free_blocks = 14},
      {.chunks = "1@7+1*", .finished = "1:length", .num_free_blocks = 16},
  });
  EXPECT_EQ(sim.output(1).usage.prompt_tokens, 6);
  EXPECT_EQ(sim.output(1).usage.completion_tokens, 3);
  EXPECT_EQ(sim.output(1).usage.cached_tokens, 0);
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, TokenBudgetChunksPrefillsAndNeverStarvesDecodes) {
  SchedulerSim sim(Config(8, 8), 32);
  sim.Run({
      {.arrivals = {Req(1, 5, 4), Req(2, 5, 4)},
       .chunks = "1@0+5* 2@0+3",
       .num_running = 2,
       .num_free_blocks = 29},
      {.chunks = "1@5+1* 2@3+2*", .num_running = 2, .num_free_blocks = 28},
      {.arrivals = {Req(3, 12, 2)},
       .chunks = "1@6+1* 2@5+1* 3@0+6",
       .num_running = 3,
       .num_free_blocks = 26},
      {.chunks = "1@7+1* 2@6+1* 3@6+6*",
       .finished = "1:length",
       .num_running = 2,
       .num_free_blocks = 27},
      {.chunks = "2@7+1* 3@12+1*", .finished = "2:length 3:length", .num_free_blocks = 32},
  });
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, SequenceBudgetHoldsArrivalsBack) {
  SchedulerSim sim(Config(64, 2), 32);
  sim.Run({
      {.arrivals = {Req(1, 4, 2), Req(2, 4, 2), Req(3, 4, 2)},
       .chunks = "1@0+4* 2@0+4*",
       .num_running = 2,
       .num_waiting = 1,
       .num_free_blocks = 30},
      {.chunks = "1@4+1* 2@4+1*",
       .finished = "1:length 2:length",
       .num_waiting = 1,
       .num_free_blocks = 32},
      {.chunks = "3@0+4*", .num_running = 1, .num_free_blocks = 31},
      {.chunks = "3@4+1*", .finished = "3:length", .num_free_blocks = 32},
  });
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, PrefixCacheHitsReduceComputedTokens) {
  const std::vector<int32_t> shared = PromptOf(7, 10);
  std::vector<int32_t> prompt_2(shared.begin(), shared.begin() + 8);
  prompt_2.insert(prompt_2.end(), {1, 3});
  const std::vector<int32_t> prompt_3(shared.begin(), shared.begin() + 8);
  SchedulerSim sim(Config(64, 4), 16);
  sim.Run({
      {.arrivals = {Req(1, shared, 1)},
       .chunks = "1@0+10*",
       .finished = "1:length",
       .num_free_blocks = 16},
      // Request 2 reuses both full blocks; request 3's whole prompt is cached, but its last
      // token is computed anyway (logits), which takes its second block.
      {.arrivals = {Req(2, prompt_2, 1), Req(3, prompt_3, 1)},
       .chunks = "2@8+2* 3@4+4*",
       .finished = "2:length 3:length",
       .num_free_blocks = 16},
  });
  ASSERT_EQ(sim.last_plan().chunks.size(), 2u);
  EXPECT_THAT(sim.last_plan().chunks[0].block_table, ElementsAre(0, 1, 3));
  EXPECT_THAT(sim.last_plan().chunks[1].block_table, ElementsAre(0, 4));
  EXPECT_EQ(sim.output(1).usage.cached_tokens, 0);
  EXPECT_EQ(sim.output(2).usage.cached_tokens, 8);
  EXPECT_EQ(sim.output(3).usage.cached_tokens, 4);
  EXPECT_EQ(sim.blocks().prefix_cache_queries(), 9 + 9 + 7);
  EXPECT_EQ(sim.blocks().prefix_cache_hits(), 8 + 4);
  sim.ExpectSoloOutputs();
}

Request WithPromptLogprobs(Request request, int32_t k) {
  request.prompt_logprobs = k;
  return request;
}

// Positions 1..n-1 of `prompt`, each once, in order (FakeExecutor's scores name positions).
void ExpectEveryPromptPositionOnce(const std::vector<TokenLogprob>& got,
                                   const std::vector<int32_t>& prompt) {
  ASSERT_EQ(got.size(), prompt.size() - 1);
  for (size_t p = 1; p < prompt.size(); ++p) {
    EXPECT_EQ(got[p - 1].token_id, prompt[p]) << "position " << p;
    EXPECT_EQ(got[p - 1].logprob, FakeExecutor::PromptLogprob(static_cast<int32_t>(p)))
        << "position " << p;
  }
}

TEST(SchedulerTest, PromptLogprobsBypassThePrefixCacheAndCoverEveryPosition) {
  const std::vector<int32_t> shared = PromptOf(7, 10);
  SchedulerSim sim(Config(64, 4), 16);
  sim.Run({
      {.arrivals = {Req(1, shared, 1)},
       .chunks = "1@0+10*",
       .finished = "1:length",
       .num_free_blocks = 16},
      // Request 2 could reuse both of request 1's full blocks; wanting prompt logprobs, it
      // computes its whole prompt. Request 3 (same prompt, no prompt logprobs) still hits.
      {.arrivals = {WithPromptLogprobs(Req(2, shared, 2), 3), Req(3, shared, 1)},
       .chunks = "2@0+10*p 3@8+2*",
       .finished = "3:length",
       .num_running = 1,
       .num_free_blocks = 13},
      // Delivered: later chunks score nothing.
      {.chunks = "2@10+1*", .finished = "2:length", .num_free_blocks = 16},
  });
  EXPECT_EQ(sim.output(2).usage.cached_tokens, 0);
  EXPECT_EQ(sim.output(3).usage.cached_tokens, 8);
  ExpectEveryPromptPositionOnce(sim.output(2).prompt_logprobs, shared);
  EXPECT_TRUE(sim.output(1).prompt_logprobs.empty());
  EXPECT_TRUE(sim.output(3).prompt_logprobs.empty());
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, ChunkedPromptLogprobsCarryTheNextPromptToken) {
  const std::vector<int32_t> prompt = PromptOf(1, 10);
  SchedulerSim sim(Config(4, 4), 16);
  sim.Run({
      {.arrivals = {WithPromptLogprobs(Req(1, prompt, 2), 0)},
       .chunks = "1@0+4p",
       .num_running = 1,
       .num_free_blocks = 15},
      {.chunks = "1@4+4p", .num_running = 1, .num_free_blocks = 14},
      {.chunks = "1@8+2*p", .num_running = 1, .num_free_blocks = 13},
      {.chunks = "1@10+1*", .finished = "1:length", .num_free_blocks = 16},
  });
  ExpectEveryPromptPositionOnce(sim.output(1).prompt_logprobs, prompt);
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, PromptLogprobsAreScoredAgainAfterPreemptionNotTwice) {
  const std::vector<int32_t> prompt = PromptOf(2, 12);
  SchedulerSim sim(Config(8, 4), 4);  // 16 tokens of KV
  sim.Run({
      {.arrivals = {Req(1, 4, 4), WithPromptLogprobs(Req(2, prompt, 1), 1)},
       .chunks = "1@0+4* 2@0+4p",
       .num_running = 2,
       .num_free_blocks = 2},
      // Request 2's next 7 tokens need two more blocks: it is preempted (itself the newest), its
      // 4 scores dropped.
      {.chunks = "1@4+1*", .num_running = 1, .num_waiting = 1, .num_free_blocks = 2},
      // Recomputed from position 0, not from its cached block; preempted again next step.
      {.chunks = "1@5+1* 2@0+7p", .num_running = 2},
      {.chunks = "1@6+1*", .finished = "1:length", .num_waiting = 1, .num_free_blocks = 4},
      {.chunks = "2@0+8p", .num_running = 1, .num_free_blocks = 2},
      {.chunks = "2@8+4*p", .finished = "2:length", .num_free_blocks = 4},
  });
  EXPECT_EQ(sim.scheduler().num_preemptions(), 2);
  ExpectEveryPromptPositionOnce(sim.output(2).prompt_logprobs, prompt);
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, PreemptsNewestWhenBlocksRunOutAndResumesIdentically) {
  SchedulerSim sim(Config(64, 4), 4);  // 16 tokens of KV
  sim.Run({
      {.arrivals = {Req(1, 4, 8), Req(2, 4, 8)},
       .chunks = "1@0+4* 2@0+4*",
       .num_running = 2,
       .num_free_blocks = 2},
      {.chunks = "1@4+1* 2@4+1*", .num_running = 2},
      {.chunks = "1@5+1* 2@5+1*", .num_running = 2},
      {.chunks = "1@6+1* 2@6+1*", .num_running = 2},
      {.chunks = "1@7+1* 2@7+1*", .num_running = 2},
      // Request 1 needs a third block: request 2 (newest) is preempted, its 8 computed tokens
      // dropped; nothing is admitted in a step that preempted.
      {.chunks = "1@8+1*", .num_running = 1, .num_waiting = 1, .num_free_blocks = 1},
      // Request 2 needs 3 blocks; its first is still cached but only one block is free.
      {.chunks = "1@9+1*", .num_running = 1, .num_waiting = 1, .num_free_blocks = 1},
      {.chunks = "1@10+1*", .finished = "1:length", .num_waiting = 1, .num_free_blocks = 4},
      // Resume by recompute: the cached first block is reused, the rest (prompt and the five
      // tokens it had produced) computed again, and decoding goes on where it stopped.
      {.chunks = "2@4+5*", .num_running = 1, .num_free_blocks = 1},
      {.chunks = "2@9+1*", .num_running = 1, .num_free_blocks = 1},
      {.chunks = "2@10+1*", .finished = "2:length", .num_free_blocks = 4},
  });
  EXPECT_EQ(sim.scheduler().num_preemptions(), 1);
  EXPECT_EQ(sim.output(2).usage.cached_tokens, 0);  // counted at the first admission only
  EXPECT_EQ(sim.output(2).tokens.size(), 8u);
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, PriorityPicksThePreemptionVictimEvenItself) {
  SchedulerSim sim(Config(64, 4), 4);
  sim.Run({
      {.arrivals = {Req(1, 4, 8, /*priority=*/1)},
       .chunks = "1@0+4*",
       .num_running = 1,
       .num_free_blocks = 3},
      {.arrivals = {Req(2, 4, 8, /*priority=*/0)},
       .chunks = "1@4+1* 2@0+4*",
       .num_running = 2,
       .num_free_blocks = 1},
      // Request 2 runs first from now on: lower value, higher priority.
      {.chunks = "2@4+1* 1@5+1*", .num_running = 2},
      {.chunks = "2@5+1* 1@6+1*", .num_running = 2},
      {.chunks = "2@6+1* 1@7+1*", .num_running = 2},
      // Request 1 needs a third block and is itself the lowest-priority running request.
      {.chunks = "2@7+1*", .num_running = 1, .num_waiting = 1, .num_free_blocks = 2},
      {.chunks = "2@8+1*", .num_running = 1, .num_waiting = 1, .num_free_blocks = 1},
      {.chunks = "2@9+1*", .num_running = 1, .num_waiting = 1, .num_free_blocks = 1},
      {.chunks = "2@10+1*", .finished = "2:length", .num_waiting = 1, .num_free_blocks = 4},
      {.chunks = "1@4+5*", .num_running = 1, .num_free_blocks = 1},
      {.chunks = "1@9+1*", .num_running = 1, .num_free_blocks = 1},
      {.chunks = "1@10+1*", .finished = "1:length", .num_free_blocks = 4},
  });
  EXPECT_EQ(sim.scheduler().num_preemptions(), 1);
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, PriorityOrdersWaitingRequests) {
  SchedulerSim sim(Config(64, 1), 16);
  sim.Run({
      {.arrivals = {Req(1, 4, 2)}, .chunks = "1@0+4*", .num_running = 1, .num_free_blocks = 15},
      {.arrivals = {Req(2, 4, 1, 5), Req(3, 4, 1, -1), Req(4, 4, 1, 5)},
       .chunks = "1@4+1*",
       .finished = "1:length",
       .num_waiting = 3,
       .num_free_blocks = 16},
      {.chunks = "3@0+4*", .finished = "3:length", .num_waiting = 2, .num_free_blocks = 16},
      {.chunks = "2@0+4*", .finished = "2:length", .num_waiting = 1, .num_free_blocks = 16},
      {.chunks = "4@0+4*", .finished = "4:length", .num_free_blocks = 16},
  });
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, StopConditions) {
  // Request 1 samples EOS second; request 2 ignores EOS; request 3 has stop id 777; request 4
  // reaches max_model_len (10) after 2 of its 16 tokens.
  SchedulerSim sim(Config(64, 8, /*max_model_len=*/10), 32,
                   {{1, 1, kEos}, {2, 1, kEos}, {3, 0, 777}});
  Request ignores_eos = Req(2, 4, 3);
  ignores_eos.ignore_eos = true;
  ignores_eos.sampling.logprobs = true;
  Request stop_id = Req(3, 4, 5);
  stop_id.stop_token_ids = {777};
  sim.Run({
      {.arrivals = {Req(1, 4, 5), ignores_eos, stop_id, Req(4, 8, 16)},
       .chunks = "1@0+4* 2@0+4* 3@0+4* 4@0+8*",
       .finished = "3:stop",
       .num_running = 3,
       .num_free_blocks = 28},
      {.chunks = "1@4+1* 2@4+1* 4@8+1*",
       .finished = "1:stop 4:length",
       .num_running = 1,
       .num_free_blocks = 30},
      {.chunks = "2@5+1*", .finished = "2:length", .num_free_blocks = 32},
  });
  EXPECT_EQ(sim.output(1).tokens.back(), kEos);  // the stop token ends token_ids
  EXPECT_EQ(sim.output(2).tokens[1], kEos);
  EXPECT_EQ(sim.output(3).tokens, std::vector<int32_t>{777});
  EXPECT_EQ(sim.output(4).tokens.size(), 2u);
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, KvPoolCapsSequenceLength) {
  SchedulerSim sim(Config(64, 4), 4);  // no max_model_len: 16 tokens of KV
  sim.Run({
      {.arrivals = {Req(1, 12, 100)}, .chunks = "1@0+12*", .num_running = 1, .num_free_blocks = 1},
      {.chunks = "1@12+1*", .num_running = 1},
      {.chunks = "1@13+1*", .num_running = 1},
      {.chunks = "1@14+1*", .finished = "1:length", .num_free_blocks = 4},
  });
  EXPECT_EQ(sim.output(1).tokens.size(), 4u);
  sim.ExpectSoloOutputs();
}

TEST(SchedulerTest, AbortMidPrefillMidDecodeAndMidStepFreesBlocks) {
  SchedulerSim sim(Config(8, 4), 16);
  sim.Run({
      {.arrivals = {Req(1, 4, 16), Req(2, 12, 16)},
       .chunks = "1@0+4* 2@0+4",
       .num_running = 2,
       .num_free_blocks = 14},
      {.chunks = "1@4+1* 2@4+7", .num_running = 2, .num_free_blocks = 11},
      {.aborts = {2},  // mid-prefill
       .chunks = "1@5+1*",
       .finished = "2:abort",
       .num_running = 1,
       .num_free_blocks = 14},
      {.aborts = {1}, .chunks = "", .finished = "1:abort", .num_free_blocks = 16},  // mid-decode
      {.arrivals = {Req(3, 4, 4)},
       .chunks = "3@0+4*",
       .late_aborts = {3},  // after Schedule: its sampled token is dropped
       .finished = "3:abort",
       .num_free_blocks = 16},
  });
  EXPECT_EQ(sim.output(1).tokens.size(), 3u);
  EXPECT_EQ(sim.output(1).usage.completion_tokens, 3);
  EXPECT_EQ(sim.output(2).usage.completion_tokens, 0);
  EXPECT_TRUE(sim.output(3).tokens.empty());
  EXPECT_FALSE(sim.scheduler().HasWork());
}

TEST(SchedulerTest, FailAllEndsEveryRequestAndFreesBlocks) {
  SchedulerSim sim(Config(64, 1), 16);
  sim.Run({{.arrivals = {Req(1, 4, 8), Req(2, 4, 8)},
            .chunks = "1@0+4*",
            .num_running = 1,
            .num_waiting = 1,
            .num_free_blocks = 15}});
  sim.scheduler().Abort(1);
  std::vector<std::string> ends;
  for (const RequestOutput& out : sim.scheduler().FailAll("device lost")) {
    ends.push_back(absl::StrCat(out.id, ":", FinishReasonName(*out.finish_reason), ":", out.error));
  }
  EXPECT_THAT(ends, ElementsAre("1:abort:", "2:error:device lost"));
  EXPECT_FALSE(sim.scheduler().HasWork());
  EXPECT_EQ(sim.blocks().num_free_blocks(), 16);
  EXPECT_TRUE(sim.scheduler().Add(Req(1, 4, 1)).ok());  // ids are free again
}

TEST(SchedulerTest, InvalidRequestsAreRejected) {
  BlockManager blocks(4, kBlockSize);  // 16 tokens
  Scheduler limited(Config(64, 4, /*max_model_len=*/8), blocks);
  EXPECT_TRUE(limited.Add(Req(1, 4, 1)).ok());
  const auto rejected = [&](Scheduler& scheduler, Request request) {
    const absl::Status status = scheduler.Add(std::move(request));
    return status.code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(rejected(limited, Req(1, 4, 1))) << "duplicate id";
  EXPECT_TRUE(rejected(limited, Req(2, std::vector<int32_t>{}, 1))) << "empty prompt";
  EXPECT_TRUE(rejected(limited, Req(3, 4, 0))) << "max_tokens 0";
  EXPECT_TRUE(rejected(limited, Req(4, 8, 1))) << "no room for an output within max_model_len";
  EXPECT_TRUE(rejected(limited, Req(5, std::vector<int32_t>{5, -1}, 1))) << "negative token";
  Request hot = Req(6, 4, 1);
  hot.sampling.temperature = -1.0f;
  EXPECT_TRUE(rejected(limited, hot)) << "negative temperature";
  EXPECT_TRUE(rejected(limited, WithPromptLogprobs(Req(10, 4, 1), 21))) << "prompt_logprobs 21";
  EXPECT_TRUE(rejected(limited, WithPromptLogprobs(Req(11, 4, 1), -1))) << "prompt_logprobs -1";
  EXPECT_TRUE(limited.Add(Req(7, 7, 1)).ok());
  EXPECT_EQ(limited.num_waiting(), 2);

  Scheduler unlimited(Config(64, 4), blocks);
  EXPECT_TRUE(rejected(unlimited, Req(8, 16, 1))) << "larger than the whole KV pool";
  EXPECT_TRUE(unlimited.Add(Req(9, 15, 1)).ok());

  SchedulerConfig bad = Config(0, 4);
  EXPECT_FALSE(bad.Validate().ok());
  bad = Config(8, 0);
  EXPECT_FALSE(bad.Validate().ok());
}

TEST(SchedulerTest, InvalidSamplingParamsAreRejectedWithTheirName) {
  BlockManager blocks(4, kBlockSize);
  Scheduler scheduler(Config(64, 4), blocks);
  const auto message = [&](auto edit) {
    Request request = Req(1, 4, 1);
    edit(request.sampling);
    return std::string(scheduler.CheckRequest(request).message());
  };
  EXPECT_THAT(message([](SamplingParams& p) { p.top_k = -1; }), HasSubstr("top_k"));
  EXPECT_THAT(message([](SamplingParams& p) { p.top_p = 0.0f; }), HasSubstr("top_p"));
  EXPECT_THAT(message([](SamplingParams& p) { p.top_p = 1.5f; }), HasSubstr("top_p"));
  EXPECT_THAT(message([](SamplingParams& p) { p.min_p = -0.1f; }), HasSubstr("min_p"));
  EXPECT_THAT(message([](SamplingParams& p) { p.repetition_penalty = 0.0f; }),
              HasSubstr("repetition_penalty"));
  EXPECT_THAT(message([](SamplingParams& p) { p.frequency_penalty = 3.0f; }),
              HasSubstr("frequency_penalty"));
  EXPECT_THAT(message([](SamplingParams& p) { p.presence_penalty = NAN; }),
              HasSubstr("presence_penalty"));
  EXPECT_THAT(message([](SamplingParams& p) {
                p.logit_bias = {{-3, 1.0f}};
              }),
              HasSubstr("logit_bias"));
  EXPECT_THAT(message([](SamplingParams& p) {
                p.logit_bias = {{3, 101.0f}};
              }),
              HasSubstr("logit_bias"));
  EXPECT_THAT(message([](SamplingParams& p) { p.top_logprobs = 21; }), HasSubstr("top_logprobs"));
  EXPECT_THAT(message([](SamplingParams& p) { p.top_logprobs = 2; }),
              HasSubstr("requires logprobs"));
  EXPECT_EQ(message([](SamplingParams& p) {
              p = {.temperature = 0.7f,
                   .logprobs = true,
                   .top_k = 5,
                   .top_p = 0.9f,
                   .min_p = 0.05f,
                   .repetition_penalty = 1.1f,
                   .frequency_penalty = -2.0f,
                   .presence_penalty = 2.0f,
                   .logit_bias = {{3, -100.0f}},
                   .top_logprobs = 20};
            }),
            "");
  Request stop = Req(2, 4, 1);
  stop.stop_token_ids = {-1};
  EXPECT_THAT(std::string(scheduler.CheckRequest(stop).message()), HasSubstr("stop token"));
}

// The worker frees per-request state from StepPlan::finished; a prefix-cache hit of a request
// that samples with penalties carries the cached tokens, since the worker never saw them.
TEST(SchedulerTest, PlansListFinishedRequestsAndContextForHistoryReaders) {
  const std::vector<int32_t> shared = PromptOf(7, 10);
  SchedulerSim sim(Config(64, 4), 16);
  Request penalized = Req(3, shared, 2);
  penalized.sampling.repetition_penalty = 1.2f;
  sim.Run({
      {.arrivals = {Req(1, shared, 1)},
       .chunks = "1@0+10*",
       .finished = "1:length",
       .num_free_blocks = 16},
      {.arrivals = {Req(2, 4, 3)}, .chunks = "2@0+4*", .num_running = 1, .num_free_blocks = 15},
  });
  EXPECT_THAT(sim.last_plan().finished, ElementsAre(1));
  EXPECT_TRUE(sim.last_plan().chunks[0].context_token_ids.empty());
  sim.Run({{.arrivals = {penalized},
            .aborts = {2},
            .chunks = "3@8+2*",
            .finished = "2:abort",
            .num_running = 1,
            .num_free_blocks = 13}});
  EXPECT_THAT(sim.last_plan().finished, ElementsAre(2));
  EXPECT_EQ(sim.last_plan().chunks[0].context_token_ids,
            std::vector<int32_t>(shared.begin(), shared.begin() + 8));
  sim.Run({{.chunks = "3@10+1*", .finished = "3:length", .num_free_blocks = 16}});
  EXPECT_TRUE(sim.last_plan().finished.empty());
  EXPECT_TRUE(sim.last_plan().chunks[0].context_token_ids.empty()) << "only on admission";
  EXPECT_EQ(sim.scheduler().Schedule().finished.size(), 0u) << "an empty plan keeps them";
  sim.Run({{.arrivals = {Req(4, 4, 1)},
            .chunks = "4@0+4*",
            .finished = "4:length",
            .num_free_blocks = 16}});
  EXPECT_THAT(sim.last_plan().finished, ElementsAre(3));
}

// Many requests with shared prefixes on a tight pool and random budgets: every step keeps the
// pool consistent, and every request produces exactly its solo output despite chunking,
// prefix-cache hits and preemption.
TEST(SchedulerTest, RandomWorkloadsMatchSoloRuns) {
  int64_t num_preemptions = 0;
  int64_t num_hits = 0;
  for (uint32_t seed = 1; seed <= 50; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937 rng(seed);
    auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const int32_t num_blocks = uniform(8, 24);
    SchedulerSim sim(Config(uniform(1, 40), uniform(1, 8)), num_blocks);
    RequestId next_id = 1;
    for (int step = 0; (step < 200 || sim.scheduler().HasWork()) && step < 100000; ++step) {
      if (HasFailure()) return;
      std::vector<Request> arrivals;
      if (step < 200 && uniform(0, 2) == 0) {
        std::vector<int32_t> prompt = PromptOf(uniform(1, 3), uniform(0, 3) * kBlockSize);
        for (int i = uniform(1, 6); i > 0; --i) prompt.push_back(uniform(3, 9));
        arrivals.push_back(Req(next_id++, prompt, uniform(1, 12), uniform(0, 1)));
      }
      std::vector<RequestId> aborts;
      if (next_id > 1 && uniform(0, 30) == 0) aborts.push_back(uniform(1, next_id - 1));
      sim.StepUnchecked(arrivals, aborts);
    }
    EXPECT_FALSE(sim.scheduler().HasWork());
    sim.ExpectSoloOutputs();
    num_preemptions += sim.scheduler().num_preemptions();
    num_hits += sim.blocks().prefix_cache_hits();
  }
  EXPECT_GT(num_preemptions, 0);
  EXPECT_GT(num_hits, 0);
}

}  // namespace
}  // namespace kvfold
