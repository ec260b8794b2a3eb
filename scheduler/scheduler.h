// Decides each iteration's batch (vLLM v1's idea): every sequence has tokens it knows and tokens
// already computed; each step hands out tokens to close that gap under a token budget and a
// sequence budget. Prefill, chunked prefill, prefix-cache hits, recompute after preemption and
// decode are one mechanism. Running sequences (decodes first) are served before waiting ones,
// so decodes are never starved by long prompts.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "scheduler/block_manager.h"
#include "scheduler/request.h"
#include "scheduler/step_plan.h"

namespace kvfold {

struct SchedulerConfig {
  int32_t max_num_batched_tokens = 2048;  // tokens per step
  int32_t max_num_seqs = 256;             // sequences per step
  // Prompt + output tokens per sequence; 0: no limit but the KV pool. A sequence never grows
  // past the pool either (it could never fit), and ends with kLength at whichever limit is lower.
  int32_t max_model_len = 0;
  std::vector<int32_t> eos_token_ids;  // the model's; a request may ignore them
  absl::Status Validate() const;
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, BlockManager& blocks);
  ~Scheduler();

  // Queues a request. InvalidArgument (and nothing queued) for an empty prompt, a prompt that
  // leaves no room for one output token within max_model_len, max_tokens < 1, a duplicate id,
  // or a prompt that could never fit in the whole KV pool.
  absl::Status Add(Request request);
  // Add's checks except the duplicate id. Reads only the config and the pool's size, so any
  // thread may call it while another runs the scheduler.
  absl::Status CheckRequest(const Request& request) const;
  // Ends the request wherever it is; its blocks are freed now. The next Update reports it with
  // finish reason kAbort. Unknown ids are ignored.
  void Abort(RequestId id);

  // This iteration's batch. Admits waiting requests in priority order while blocks and budgets
  // allow; preempts (recompute) when running sequences need blocks the pool lacks.
  StepPlan Schedule();
  // Applies the executor's result: appends sampled tokens, finishes requests on EOS/stop ids,
  // max_tokens or max_model_len, caches newly full blocks, frees finished sequences' blocks.
  // Returns one delta per request that produced tokens or finished (including aborts since the
  // last call). A stop token (EOS or stop id) is the last of its request's token_ids. `result`
  // must hold one token per sampling chunk, in order (CHECKed; the engine validates first).
  std::vector<RequestOutput> Update(const StepPlan& plan, const StepResult& result);
  // Ends every live request with kError and `message` (e.g. the executor failed); frees all.
  std::vector<RequestOutput> FailAll(const std::string& message);

  bool HasWork() const;
  int32_t num_running() const;
  int32_t num_waiting() const;
  int64_t num_preemptions() const;

 private:
  struct Sequence;
  // Implementation-defined state (sequences by id, waiting and running queues, pending aborts).
  struct State;

  // Schedule's two phases; both spend `budget` (tokens). ScheduleRunning returns whether it
  // preempted anything (then nothing is admitted this step).
  bool ScheduleRunning(StepPlan& plan, int32_t& budget);
  void AdmitWaiting(StepPlan& plan, int32_t& budget);
  void Preempt(Sequence& seq);
  void InsertWaiting(Sequence* seq);
  void InsertRunning(Sequence* seq);
  void AddChunk(StepPlan& plan, const Sequence& seq, int32_t num_tokens) const;
  // Appends a sampled token; returns the finish reason if the sequence is done.
  std::optional<FinishReason> AppendToken(Sequence& seq, const SampledToken& sampled) const;
  // The lower of max_model_len and the pool's capacity, in tokens.
  int32_t max_len() const;

  const SchedulerConfig config_;
  BlockManager& blocks_;
  std::unique_ptr<State> state_;
};

}  // namespace kvfold
