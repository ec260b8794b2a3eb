// A deterministic stand-in for the model, for scheduler and engine tests. It keeps a shadow KV
// cache (one token id per slot), writes each chunk's tokens through the chunk's block table, and
// "predicts" the next token as a hash of the whole context it reads back through that table. So
// a wrong block table, a bad prefix-cache hit or a missed recompute changes the output, as it
// would with a real model, while a correct schedule gives each request the same tokens as a solo
// run. Thread-safe: tests may change its settings while an engine thread calls Execute.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "scheduler/scheduler.h"
#include "scheduler/step_plan.h"

namespace kvfold::testing {

class FakeExecutor : public Executor {
 public:
  static constexpr int32_t kUnwritten = -1;
  static constexpr float kLogprob = -0.5f;  // every sampled token's
  // A prompt token's "logprob" names its position p: -p, so tests see which positions a request
  // got scored (each once, in order).
  static float PromptLogprob(int32_t position) { return -static_cast<float>(position); }

  FakeExecutor(int32_t num_blocks, int32_t block_size)
      : block_size_(block_size), kv_(static_cast<size_t>(num_blocks) * block_size, kUnwritten) {}

  absl::StatusOr<StepResult> Execute(const StepPlan& plan) override {
    std::chrono::microseconds delay;
    {
      std::lock_guard<std::mutex> lock(mu_);
      delay = delay_;
      ++num_steps_;
      if (num_failures_left_ > 0) {
        --num_failures_left_;
        return absl::InternalError("injected executor failure");
      }
    }
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    std::lock_guard<std::mutex> lock(mu_);
    StepResult result;
    for (const ScheduledChunk& chunk : plan.chunks) {
      absl::StatusOr<int32_t> token = Run(chunk);
      if (!token.ok()) return token.status();
      if (chunk.prompt_logprobs.has_value()) result.prompt_logprobs.push_back(ScorePrompt(chunk));
      if (chunk.sample) {
        result.sampled.push_back(
            SampledToken{.request_id = chunk.request_id, .token_id = *token, .logprob = kLogprob});
      }
    }
    return result;
  }

  // Makes output `output_index` of request `id` be `token` (e.g. an EOS id).
  void ForceToken(RequestId id, int32_t output_index, int32_t token) {
    std::lock_guard<std::mutex> lock(mu_);
    forced_[{id, output_index}] = token;
  }
  void FailNextSteps(int32_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    num_failures_left_ = n;
  }
  void set_delay(std::chrono::microseconds delay) {
    std::lock_guard<std::mutex> lock(mu_);
    delay_ = delay;
  }
  int64_t num_steps() const {
    std::lock_guard<std::mutex> lock(mu_);
    return num_steps_;
  }

 private:
  static uint64_t Mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }

  // Row i scores the prompt token after it (ScheduledChunk::prompt_logprobs).
  static ChunkPromptLogprobs ScorePrompt(const ScheduledChunk& chunk) {
    ChunkPromptLogprobs scores{.request_id = chunk.request_id};
    for (int32_t i = 0; i < chunk.num_prompt_scores(); ++i) {
      const int32_t next = i + 1 < static_cast<int32_t>(chunk.token_ids.size())
                               ? chunk.token_ids[i + 1]
                               : chunk.next_prompt_token;
      scores.logprobs.push_back(
          TokenLogprob{.token_id = next, .logprob = PromptLogprob(chunk.start_position + i + 1)});
    }
    return scores;
  }

  size_t Slot(const ScheduledChunk& chunk, int32_t position) const {
    return static_cast<size_t>(chunk.block_table[position / block_size_]) * block_size_ +
           position % block_size_;
  }

  // Writes the chunk's K/V and returns the token its last position predicts.
  absl::StatusOr<int32_t> Run(const ScheduledChunk& chunk) {
    const int32_t end = chunk.start_position + static_cast<int32_t>(chunk.token_ids.size());
    if (static_cast<int32_t>(chunk.block_table.size()) * block_size_ < end) {
      return absl::InternalError(absl::StrCat("request ", chunk.request_id,
                                              ": block table too short for ", end, " tokens"));
    }
    for (size_t i = 0; i < chunk.token_ids.size(); ++i) {
      kv_[Slot(chunk, chunk.start_position + static_cast<int32_t>(i))] = chunk.token_ids[i];
    }
    uint64_t context_hash = 0;
    for (int32_t position = 0; position < end; ++position) {
      const int32_t token = kv_[Slot(chunk, position)];
      if (token == kUnwritten) {
        return absl::InternalError(absl::StrCat("request ", chunk.request_id, " reads position ",
                                                position, " that was never written"));
      }
      context_hash = Mix(context_hash ^ static_cast<uint32_t>(token));
    }
    auto forced = forced_.find({chunk.request_id, chunk.output_index});
    if (forced != forced_.end()) return forced->second;
    return 1000 + static_cast<int32_t>(context_hash % 1000);
  }

  const int32_t block_size_;
  mutable std::mutex mu_;
  std::vector<int32_t> kv_;  // by slot: block id * block_size + offset
  absl::flat_hash_map<std::pair<RequestId, int32_t>, int32_t> forced_;
  std::chrono::microseconds delay_{0};
  int32_t num_failures_left_ = 0;
  int64_t num_steps_ = 0;
};

// The tokens `request` produces alone on a pool of `num_blocks`, scheduled in as few steps as the
// pool allows; `forced` as in FakeExecutor::ForceToken, as (id, output index, token).
struct ForcedToken {
  RequestId id;
  int32_t output_index;
  int32_t token;
};
inline std::vector<int32_t> RunAlone(SchedulerConfig config, int32_t num_blocks, int32_t block_size,
                                     const Request& request,
                                     const std::vector<ForcedToken>& forced = {}) {
  BlockManager blocks(num_blocks, block_size);
  config.max_num_batched_tokens = 1 << 20;
  Scheduler scheduler(config, blocks);
  FakeExecutor executor(num_blocks, block_size);
  for (const ForcedToken& f : forced) executor.ForceToken(f.id, f.output_index, f.token);
  EXPECT_TRUE(scheduler.Add(request).ok());
  std::vector<int32_t> tokens;
  while (scheduler.HasWork()) {
    const StepPlan plan = scheduler.Schedule();
    absl::StatusOr<StepResult> result = executor.Execute(plan);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) break;
    for (const RequestOutput& out : scheduler.Update(plan, *result)) {
      tokens.insert(tokens.end(), out.token_ids.begin(), out.token_ids.end());
    }
  }
  return tokens;
}

}  // namespace kvfold::testing
