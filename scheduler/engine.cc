#include "scheduler/engine.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "scheduler/block_manager.h"

namespace kvfold {
namespace {

struct Submission {
  Request request;
  Engine::OutputCallback on_output;
};
// What other threads hand the loop, in the order they did: a submission or an abort.
using InboxItem = std::variant<Submission, RequestId>;

// The executor's result has one token per sampling chunk, in chunk order.
// Whether `results` pair up one by one, in order, with the chunks `wants` selects, each pair
// passing `matches`.
template <typename Result, typename Wants, typename Matches>
bool PairsInOrder(const std::vector<ScheduledChunk>& chunks, const std::vector<Result>& results,
                  Wants wants, Matches matches) {
  size_t next = 0;
  for (const ScheduledChunk& chunk : chunks) {
    if (!wants(chunk)) continue;
    if (next >= results.size() || !matches(chunk, results[next])) return false;
    ++next;
  }
  return next == results.size();
}

absl::Status CheckResult(const StepPlan& plan, const StepResult& result) {
  auto count = [&](auto wants) {
    return std::count_if(plan.chunks.begin(), plan.chunks.end(), wants);
  };
  auto sampling = [](const ScheduledChunk& c) { return c.sample; };
  if (!PairsInOrder(plan.chunks, result.sampled, sampling,
                    [](const ScheduledChunk& c, const SampledToken& s) {
                      return s.request_id == c.request_id;
                    })) {
    return absl::InternalError(absl::StrCat("the executor returned ", result.sampled.size(),
                                            " tokens for ", count(sampling),
                                            " sampling chunks, or out of order"));
  }
  // One ChunkPromptLogprobs per chunk with prompt_logprobs, in order, each the right size.
  auto scoring = [](const ScheduledChunk& c) { return c.prompt_logprobs.has_value(); };
  if (!PairsInOrder(plan.chunks, result.prompt_logprobs, scoring,
                    [](const ScheduledChunk& c, const ChunkPromptLogprobs& p) {
                      return p.request_id == c.request_id &&
                             static_cast<int32_t>(p.logprobs.size()) == c.num_prompt_scores();
                    })) {
    return absl::InternalError(absl::StrCat(
        "the executor returned ", result.prompt_logprobs.size(), " prompt logprobs lists for ",
        count(scoring), " chunks that asked for them, or out of order, or the wrong size"));
  }
  return absl::OkStatus();
}

}  // namespace

// Thread ownership: `blocks`, `scheduler` and `callbacks` belong to the loop thread; everything
// under `mu` is shared. Callbacks run on the loop thread without `mu` held, so they may call
// Submit and Abort.
struct Engine::Impl {
  Impl(const SchedulerConfig& config, int32_t num_blocks, int32_t block_size, uint64_t salt,
       Executor& executor, StepObserver on_step)
      : executor(executor),
        on_step(std::move(on_step)),
        blocks(num_blocks, block_size, salt),
        scheduler(config, blocks) {}

  void Loop();
  void Apply(std::vector<InboxItem>& items);
  void Step();
  void Deliver(std::vector<RequestOutput>& outputs);
  void AbortAllLive();
  void PublishStats();

  Executor& executor;
  StepObserver on_step;
  BlockManager blocks;
  Scheduler scheduler;
  absl::flat_hash_map<RequestId, OutputCallback> callbacks;
  absl::flat_hash_set<RequestId> never_scheduled;  // for StepInfo::first_scheduled
  int64_t num_steps = 0;

  mutable std::mutex mu;
  std::condition_variable wake;
  std::vector<InboxItem> inbox;             // guarded by mu
  absl::flat_hash_set<RequestId> live_ids;  // guarded by mu: submitted, not yet finished
  bool stopping = false;                    // guarded by mu
  EngineStats stats;                        // guarded by mu
  std::thread thread;
};

void Engine::Impl::Loop() {
  while (true) {
    std::vector<InboxItem> items;
    bool stop = false;
    {
      std::unique_lock<std::mutex> lock(mu);
      const bool woken = wake.wait_for(lock, std::chrono::seconds(1), [&] {
        return stopping || !inbox.empty() || scheduler.HasWork();
      });
      if (!woken) {
        lock.unlock();
        if (absl::Status s = executor.Idle(); !s.ok()) LOG(ERROR) << "executor idle: " << s;
        continue;
      }
      items.swap(inbox);
      stop = stopping;
    }
    Apply(items);
    if (stop) {
      AbortAllLive();
      return;
    }
    if (scheduler.HasWork()) Step();
  }
}

void Engine::Impl::Apply(std::vector<InboxItem>& items) {
  for (InboxItem& item : items) {
    if (RequestId* abort_id = std::get_if<RequestId>(&item)) {
      scheduler.Abort(*abort_id);
      continue;
    }
    Submission& submission = std::get<Submission>(item);
    const RequestId id = submission.request.id;
    // Submit checked the request and reserved its id, so this only fails on a broken invariant.
    const absl::Status added = scheduler.Add(std::move(submission.request));
    CHECK(added.ok()) << "request " << id << ": " << added;
    callbacks.emplace(id, std::move(submission.on_output));
    if (on_step) never_scheduled.insert(id);
  }
}

void Engine::Impl::Step() {
  const StepPlan plan = scheduler.Schedule();
  std::vector<RequestOutput> outputs;
  if (plan.chunks.empty()) {  // only aborts to report
    outputs = scheduler.Update(plan, StepResult{});
  } else {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<StepResult> result = executor.Execute(plan);
    if (on_step) {
      StepInfo info;
      info.num_tokens = plan.num_tokens();
      info.num_sequences = static_cast<int32_t>(plan.chunks.size());
      info.seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      for (const ScheduledChunk& chunk : plan.chunks) {
        if (never_scheduled.erase(chunk.request_id) > 0) {
          info.first_scheduled.push_back(chunk.request_id);
        }
      }
      on_step(info);
    }
    const absl::Status status = result.ok() ? CheckResult(plan, *result) : result.status();
    if (status.ok()) {
      outputs = scheduler.Update(plan, *result);
    } else {
      LOG(ERROR) << "engine step failed; ending "
                 << scheduler.num_running() + scheduler.num_waiting() << " requests: " << status;
      outputs = scheduler.FailAll(status.ToString());
    }
  }
  ++num_steps;
  PublishStats();  // before the callbacks, so a caller that saw its last delta sees the stats
  Deliver(outputs);
}

void Engine::Impl::Deliver(std::vector<RequestOutput>& outputs) {
  for (RequestOutput& out : outputs) {
    auto it = callbacks.find(out.id);
    CHECK(it != callbacks.end()) << "output for unknown request " << out.id;
    if (!out.finish_reason.has_value()) {
      it->second(out);
      continue;
    }
    // Release the id before the last callback, so the callback may reuse it.
    OutputCallback on_output = std::move(it->second);
    callbacks.erase(it);
    never_scheduled.erase(out.id);
    {
      std::lock_guard<std::mutex> lock(mu);
      live_ids.erase(out.id);
    }
    on_output(out);
  }
}

void Engine::Impl::AbortAllLive() {
  for (const auto& [id, callback] : callbacks) scheduler.Abort(id);
  std::vector<RequestOutput> outputs = scheduler.Update(StepPlan{}, StepResult{});
  Deliver(outputs);
  CHECK(callbacks.empty()) << callbacks.size() << " requests left at shutdown";
  PublishStats();
}

void Engine::Impl::PublishStats() {
  std::lock_guard<std::mutex> lock(mu);
  stats.num_running = scheduler.num_running();
  stats.num_waiting = scheduler.num_waiting();
  stats.num_free_blocks = blocks.num_free_blocks();
  stats.num_blocks = blocks.num_blocks();
  stats.num_steps = num_steps;
  stats.num_preemptions = scheduler.num_preemptions();
  stats.prefix_cache_queries = blocks.prefix_cache_queries();
  stats.prefix_cache_hits = blocks.prefix_cache_hits();
}

Engine::Engine(const SchedulerConfig& scheduler_config, int32_t num_blocks, int32_t block_size,
               uint64_t cache_salt, Executor& executor, StepObserver on_step)
    : impl_(std::make_unique<Impl>(scheduler_config, num_blocks, block_size, cache_salt, executor,
                                   std::move(on_step))) {
  impl_->PublishStats();
  impl_->thread = std::thread([impl = impl_.get()] { impl->Loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_one();
  impl_->thread.join();
}

absl::Status Engine::Submit(Request request, OutputCallback on_output) {
  if (!on_output) return absl::InvalidArgumentError("no output callback");
  // CheckRequest reads only the immutable config and pool size: safe beside the loop thread.
  if (absl::Status valid = impl_->scheduler.CheckRequest(request); !valid.ok()) return valid;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopping) return absl::UnavailableError("the engine is shutting down");
    if (!impl_->live_ids.insert(request.id).second) {
      return absl::InvalidArgumentError(absl::StrCat("request id ", request.id, " is in use"));
    }
    impl_->inbox.emplace_back(Submission{std::move(request), std::move(on_output)});
  }
  impl_->wake.notify_one();
  return absl::OkStatus();
}

void Engine::Abort(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopping) return;  // shutdown aborts everything anyway
    impl_->inbox.emplace_back(id);
  }
  impl_->wake.notify_one();
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

}  // namespace kvfold
