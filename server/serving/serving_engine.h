// What both front ends (HTTP and gRPC) talk to: the engine loop over a paged KV pool for one
// loaded model, with the server's text-level work on the way out (incremental detokenization,
// stop strings held back until they cannot match), admission control (a bounded waiting queue,
// refusal while draining) and liveness (is the loop making progress).
//
// Threading: Submit, Abort, StartDrain, WaitIdle and the getters are safe from any thread.
// DeltaCallbacks run on the engine thread, one stream's deltas in order; they must only hand the
// delta over (post to an io_context, queue a gRPC write), never block. They may call Abort.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/ops.h"
#include "scheduler/engine.h"
#include "scheduler/request.h"
#include "scheduler/scheduler.h"
#include "server/metrics/request_log.h"
#include "server/metrics/serving_metrics.h"
#include "server/tokenizer/tokenizer.h"
#include "worker/cache_config.h"
#include "worker/llama_model.h"

namespace kvfold {
class DeviceSampler;  // kernels/cuda/sampling.h: the CLI makes one for a GPU
}  // namespace kvfold

namespace kvfold::serving {

// One generation (one choice of an OpenAI request; n > 1 is n of these).
struct GenerationRequest {
  std::vector<int32_t> prompt_token_ids;
  SamplingParams sampling;
  int32_t max_tokens = 16;        // the front end has checked it against the context
  std::vector<std::string> stop;  // stop strings: never appear in the output
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::string log_id;  // the front end's id for the finish log line ("cmpl-…:0"); empty: numeric
  // Request::prompt_logprobs: unset, none; k, each prompt token's logprob and k alternatives.
  std::optional<int32_t> prompt_logprobs;
};

// One piece of a generation's stream. Text is released only once no stop string can still
// match across it, so a delta may carry tokens and no text (or, at the end, text and no tokens).
struct GenerationDelta {
  std::string text;                    // new text (the detokenizer holds back partial characters)
  std::vector<int32_t> token_ids;      // tokens generated since the previous delta
  std::vector<TokenLogprob> logprobs;  // one per token_ids entry when sampling.logprobs
  // GenerationRequest::prompt_logprobs: one per prompt token from index 1, on the first delta
  // that has tokens (RequestOutput::prompt_logprobs).
  std::vector<TokenLogprob> prompt_logprobs;
  // Set on the last delta only: "stop" (EOS, a stop token or a stop string), "length", "abort"
  // (Abort, shutdown) or "error" (then `error` says why).
  std::optional<std::string> finish_reason;
  std::string error;
  Usage usage;  // last delta: prompt, kept completion tokens, prefix-cache hits
};

using DeltaCallback = std::function<void(GenerationDelta)>;

struct ServingOptions {
  // Submissions beyond this many not-yet-started generations are refused (HTTP 429).
  int32_t max_queued_requests = 512;
  // Ready() turns false when live work has seen no engine step for this long.
  absl::Duration stall_timeout = absl::Seconds(30);
  // One line per finished generation on stderr (metrics/request_log.h); nullopt: none.
  std::optional<metrics::LogFormat> request_log;
  // Samples on the model's device (a GPU), copying back token ids only; null: on the host. Must
  // outlive the engine.
  DeviceSampler* device_sampler = nullptr;
};

// The KV pool the engine runs over, for start-up lines and metrics.
struct PoolInfo {
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  size_t bytes_per_token = 0;  // under the model's attention plan
  size_t unfolded_bytes_per_token = 0;
  int64_t memory_bytes = 0;
  DType kv_dtype = DType::kBF16;
};

class ServingEngine {
 public:
  // Sizes the pool from `cache` and the model's plan, allocates it and starts the engine loop.
  // Under tensor parallelism `cache.memory_bytes` is this rank's budget and bytes per token count
  // this rank's KV heads (every rank holds the same number of blocks, each with its heads).
  // `model`, `ops` and `tokenizer` must outlive the result. InvalidArgument when the pool cannot
  // hold one sequence of scheduler.max_model_len tokens.
  static absl::StatusOr<std::unique_ptr<ServingEngine>> Create(LlamaModel& model, Ops& ops,
                                                               const Tokenizer& tokenizer,
                                                               const CacheConfig& cache,
                                                               const SchedulerConfig& scheduler,
                                                               ServingOptions options = {});
  // Stops the loop; live generations get a last "abort" delta first.
  ~ServingEngine();

  // Queues one generation; on_delta gets every delta, the last with a finish reason. Errors
  // (nothing queued, on_delta never called): Unavailable while draining or after Fail,
  // ResourceExhausted when the waiting queue is full, InvalidArgument when the engine refuses the
  // request (a token id outside the vocabulary, a prompt that cannot fit).
  absl::StatusOr<RequestId> Submit(GenerationRequest request, DeltaCallback on_delta);
  // Ends a live generation with "abort" within one engine step; its KV blocks are freed. A no-op
  // for an unknown or finished id.
  void Abort(RequestId id);

  // Refuses new submissions from now on (Unavailable); live ones continue.
  void StartDrain();
  bool draining() const;
  // Waits until no generation is live; false when `timeout` ran out first.
  bool WaitIdle(absl::Duration timeout);
  // Aborts every live generation.
  void AbortAll();

  // From now on every step and generation is recorded in `metrics`, which the engine keeps (its
  // loop reports into it until the very end). Returns it, for scraping.
  metrics::ServingMetrics* AttachMetrics(std::unique_ptr<metrics::ServingMetrics> metrics);
  // What the metrics' static part says about this engine and `model`.
  metrics::StaticInfo MetricsInfo(const LlamaModel& model) const;

  // Not draining, not failed, and the engine loop has made progress within stall_timeout
  // whenever there was work.
  bool Ready() const;

  // The executor is gone for good (a tensor-parallel rank died or stopped answering): from now on
  // Ready() is false and Submit refuses (Unavailable, with `reason`). Live generations end with
  // the error of the step that failed (or of their next one). Safe from any thread; the first
  // reason sticks.
  void Fail(const absl::Status& reason);
  // OK, or the reason given to Fail.
  absl::Status failure() const;

  int32_t max_model_len() const { return scheduler_config_.max_model_len; }
  int32_t vocab_size() const { return vocab_size_; }
  const PoolInfo& pool() const { return pool_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  EngineStats Stats() const;
  int32_t num_live() const;
  int32_t num_queued() const;  // submitted, no output yet

 private:
  struct Stream;
  struct State;
  ServingEngine(LlamaModel& model, std::unique_ptr<State> state, const Tokenizer& tokenizer,
                PoolInfo pool, const SchedulerConfig& scheduler, ServingOptions options);
  // Engine thread: turns a token-level delta into a text-level one.
  void OnOutput(const RequestOutput& output);
  void OnStep(const StepInfo& step);

  const Tokenizer& tokenizer_;
  const int32_t vocab_size_;
  const PoolInfo pool_;
  const SchedulerConfig scheduler_config_;
  const ServingOptions options_;
  std::unique_ptr<State> state_;
};

// A seed for a request that gave none, so unseeded requests do not all draw the same tokens.
uint64_t RandomSeed();

}  // namespace kvfold::serving
