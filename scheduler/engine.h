// The engine loop: one thread runs Schedule -> Executor::Execute -> Update for every live
// request; other threads submit and abort through a thread-safe inbox. Outputs are delivered by
// per-request callbacks on the engine thread: keep them short (hand the delta to another
// thread); they may call Submit and Abort, which only enqueue.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "scheduler/request.h"
#include "scheduler/scheduler.h"
#include "scheduler/step_plan.h"

namespace kvfold {

struct EngineStats {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t num_free_blocks = 0;
  int32_t num_blocks = 0;
  int64_t num_steps = 0;
  int64_t num_preemptions = 0;
  int64_t prefix_cache_queries = 0;  // tokens
  int64_t prefix_cache_hits = 0;     // tokens
};

// What one engine step did, for metrics.
struct StepInfo {
  int32_t num_tokens = 0;                  // prefill and decode tokens computed
  int32_t num_sequences = 0;               // chunks in the step
  std::vector<RequestId> first_scheduled;  // requests scheduled for the first time
  double seconds = 0;                      // Execute's wall time
};

class Engine {
 public:
  using OutputCallback = std::function<void(const RequestOutput&)>;
  // Runs on the loop thread after each step that ran chunks, before that step's outputs are
  // delivered; keep it short.
  using StepObserver = std::function<void(const StepInfo&)>;

  // `executor` must outlive the engine. The loop starts at once.
  Engine(const SchedulerConfig& scheduler_config, int32_t num_blocks, int32_t block_size,
         uint64_t cache_salt, Executor& executor, StepObserver on_step = nullptr);
  // Stops the loop; live requests end with kAbort.
  ~Engine();

  // Validates and queues; the callback receives every delta, the last with a finish reason.
  // On error nothing is queued and the callback is never called.
  absl::Status Submit(Request request, OutputCallback on_output);
  void Abort(RequestId id);
  EngineStats Stats() const;

 private:
  // The inbox of submissions and aborts (under a mutex), the scheduler and block manager (owned
  // by the loop thread), callbacks by request id, and the thread.
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvfold
