#include "server/serving/serving_engine.h"

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "server/output/text_output.h"
#include "worker/kv_cache.h"
#include "worker/model_executor.h"
#include "worker/tensor_parallel.h"

namespace kvfold::serving {

// One live generation's text side. Touched only by the engine thread once submitted.
struct ServingEngine::Stream {
  Stream(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
         std::vector<std::string> stop, DeltaCallback on_delta)
      : output(tokenizer, prompt, std::move(stop)), on_delta(std::move(on_delta)) {}

  TextOutput output;
  DeltaCallback on_delta;
  size_t text_sent = 0;  // bytes of output.text() already delivered
  bool started = false;  // has had an output (counts as queued until then)
  std::string error;     // a detokenizer failure: the generation ends with "error"
  std::string log_id;
  // For metrics: seconds since `submitted` (negative: not yet).
  absl::Time submitted = absl::Now();
  double first_scheduled = -1;
  double first_token = -1;
  double last_token = -1;
};

struct ServingEngine::State {
  State(LlamaModel& model, KvCache kv_cache) : cache(std::move(kv_cache)), executor(model, cache) {}

  KvCache cache;
  ModelExecutor executor;
  std::unique_ptr<Engine> engine;  // reset first on destruction: its callbacks use the rest

  std::atomic<RequestId> next_id{1};
  std::atomic<metrics::ServingMetrics*> metrics{nullptr};
  std::unique_ptr<metrics::ServingMetrics> owned_metrics;  // outlives `engine` (reset first)
  mutable std::mutex mu;
  std::condition_variable idle;
  absl::flat_hash_map<RequestId, std::shared_ptr<Stream>> streams;  // guarded by mu
  int32_t num_queued = 0;                                           // guarded by mu
  bool draining = false;                                            // guarded by mu
  absl::Status failure;                                             // guarded by mu
  // Progress watch for Ready(): the last step count seen and when it last changed.
  mutable int64_t seen_steps = -1;   // guarded by mu
  mutable absl::Time seen_steps_at;  // guarded by mu
};

absl::StatusOr<std::unique_ptr<ServingEngine>> ServingEngine::Create(
    LlamaModel& model, Ops& ops, const Tokenizer& tokenizer, const CacheConfig& cache,
    const SchedulerConfig& scheduler, ServingOptions options) {
  if (absl::Status s = cache.Validate(); !s.ok()) return s;
  if (absl::Status s = scheduler.Validate(); !s.ok()) return s;
  PoolInfo pool;
  pool.block_size = cache.block_size;
  pool.kv_dtype = cache.kv_dtype;
  pool.memory_bytes = cache.memory_bytes;
  // This rank's KV heads (all of them at tensor-parallel size 1).
  pool.bytes_per_token = KvBytesPerToken(model.kv_layer_shapes(), cache.kv_dtype);
  pool.unfolded_bytes_per_token =
      KvCache::BytesPerToken(ShardConfig(model.config(), model.tensor_parallel()), cache.kv_dtype);
  if (pool.bytes_per_token == 0) {
    return absl::InvalidArgumentError(
        "the attention plan stores no K/V in any layer, so the KV pool has no size");
  }
  absl::StatusOr<int32_t> blocks =
      NumKvBlocks(cache, pool.bytes_per_token, scheduler.max_model_len);
  if (!blocks.ok()) return blocks.status();
  pool.num_blocks = *blocks;
  // A pool the device cannot hold is an error here, not a crash.
  absl::StatusOr<KvCache> kv = KvCache::Create(ops, model.kv_layer_shapes(), pool.num_blocks,
                                               pool.block_size, pool.kv_dtype);
  if (!kv.ok()) return kv.status();
  return std::unique_ptr<ServingEngine>(new ServingEngine(
      model, std::make_unique<State>(model, *std::move(kv)), tokenizer, pool, scheduler, options));
}

ServingEngine::ServingEngine(LlamaModel& model, std::unique_ptr<State> state,
                             const Tokenizer& tokenizer, PoolInfo pool,
                             const SchedulerConfig& scheduler, ServingOptions options)
    : tokenizer_(tokenizer),
      vocab_size_(model.config().vocab_size),
      pool_(pool),
      scheduler_config_(scheduler),
      options_(options),
      state_(std::move(state)) {
  state_->executor.set_device_sampler(options.device_sampler);
  // Blocks cached under one attention plan are never reused under another.
  state_->engine = std::make_unique<Engine>(scheduler, pool.num_blocks, pool.block_size,
                                            model.plan().cache_salt(), state_->executor,
                                            [this](const StepInfo& step) { OnStep(step); });
}

ServingEngine::~ServingEngine() { state_->engine.reset(); }

absl::StatusOr<RequestId> ServingEngine::Submit(GenerationRequest request, DeltaCallback on_delta) {
  if (!on_delta) return absl::InvalidArgumentError("no delta callback");
  // Checked here, not per step: one bad id in a batch would fail every request in the step.
  for (size_t i = 0; i < request.prompt_token_ids.size(); ++i) {
    const int32_t token = request.prompt_token_ids[i];
    if (token < 0 || token >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token ", i, " is ", token, ", outside the vocabulary [0, ", vocab_size_, ")"));
    }
  }
  const RequestId id = state_->next_id.fetch_add(1);
  auto stream = std::make_shared<Stream>(tokenizer_, request.prompt_token_ids,
                                         std::move(request.stop), std::move(on_delta));
  stream->log_id = request.log_id.empty() ? absl::StrCat(id) : std::move(request.log_id);
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->failure.ok()) {
      return absl::UnavailableError(
          absl::StrCat("the engine has failed: ", state_->failure.message()));
    }
    if (state_->draining) return absl::UnavailableError("the server is shutting down");
    if (state_->num_queued >= options_.max_queued_requests) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the waiting queue is full (", options_.max_queued_requests, " requests); retry later"));
    }
    // A stall is measured from the first work after an idle spell, not from before it.
    if (state_->streams.empty()) state_->seen_steps_at = absl::Now();
    // Registered before the engine sees it: its first output may come at once.
    state_->streams.emplace(id, stream);
    ++state_->num_queued;
  }
  Request engine_request;
  engine_request.id = id;
  engine_request.prompt_token_ids = std::move(request.prompt_token_ids);
  engine_request.sampling = std::move(request.sampling);
  engine_request.max_tokens = request.max_tokens;
  engine_request.stop_token_ids = std::move(request.stop_token_ids);
  engine_request.ignore_eos = request.ignore_eos;
  engine_request.prompt_logprobs = request.prompt_logprobs;
  absl::Status submitted = state_->engine->Submit(std::move(engine_request),
                                                  [this](const RequestOutput& o) { OnOutput(o); });
  if (!submitted.ok()) {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->streams.erase(id);
    --state_->num_queued;
    state_->idle.notify_all();
    return submitted;
  }
  return id;
}

void ServingEngine::OnStep(const StepInfo& step) {
  metrics::ServingMetrics* m = state_->metrics.load(std::memory_order_acquire);
  if (m != nullptr) m->OnStep(step);
  if (step.first_scheduled.empty()) return;
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(state_->mu);
  for (RequestId id : step.first_scheduled) {
    auto it = state_->streams.find(id);
    if (it != state_->streams.end()) {
      it->second->first_scheduled = absl::ToDoubleSeconds(now - it->second->submitted);
    }
  }
}

void ServingEngine::OnOutput(const RequestOutput& o) {
  std::shared_ptr<Stream> stream;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->streams.find(o.id);
    CHECK(it != state_->streams.end()) << "output for unknown generation " << o.id;
    stream = it->second;
    if (!stream->started) {
      stream->started = true;
      --state_->num_queued;
    }
  }
  Stream& s = *stream;
  GenerationDelta delta;
  delta.prompt_logprobs = o.prompt_logprobs;
  for (size_t i = 0; i < o.token_ids.size(); ++i) {
    if (s.output.stopped() || !s.error.empty()) break;
    absl::StatusOr<bool> stopped = s.output.Push(o.token_ids[i]);
    if (!stopped.ok()) {
      s.error = std::string(stopped.status().message());
      state_->engine->Abort(o.id);
      break;
    }
    delta.token_ids.push_back(o.token_ids[i]);
    if (i < o.logprobs.size()) delta.logprobs.push_back(o.logprobs[i]);
    if (*stopped) state_->engine->Abort(o.id);
  }
  metrics::ServingMetrics* m = state_->metrics.load(std::memory_order_acquire);
  const bool last = o.finish_reason.has_value();
  if (!delta.token_ids.empty()) {
    const double now = absl::ToDoubleSeconds(absl::Now() - s.submitted);
    if (m != nullptr) {
      m->OnTokens(static_cast<int32_t>(delta.token_ids.size()),
                  s.first_token < 0 ? -1.0 : now - s.last_token);
    }
    if (s.first_token < 0) s.first_token = now;
    s.last_token = now;
  }
  if (last) {
    if (!s.output.stopped() && s.error.empty()) {
      if (absl::Status f = s.output.Finish(); !f.ok()) s.error = std::string(f.message());
    }
    if (!s.error.empty()) {
      delta.finish_reason = "error";
      delta.error = s.error;
    } else if (s.output.stopped()) {
      delta.finish_reason = "stop";
    } else {
      delta.finish_reason = FinishReasonName(*o.finish_reason);
      if (*o.finish_reason == FinishReason::kError) {
        delta.error = o.error.empty() ? "the engine failed" : o.error;
      }
    }
    delta.usage = o.usage;
    delta.usage.completion_tokens = static_cast<int32_t>(s.output.token_ids().size());
  }
  const size_t releasable = last ? s.output.text().size() : s.output.stable_size();
  if (releasable > s.text_sent) {
    delta.text = s.output.text().substr(s.text_sent, releasable - s.text_sent);
    s.text_sent = releasable;
  }
  if (!last) {
    if (!delta.token_ids.empty() || !delta.text.empty() || !delta.prompt_logprobs.empty()) {
      s.on_delta(std::move(delta));
    }
    return;
  }
  if (m != nullptr || options_.request_log.has_value()) {
    metrics::GenerationTimeline t;
    t.first_scheduled = s.first_scheduled;
    t.first_token = s.first_token;
    t.last_token = s.last_token;
    t.finished = absl::ToDoubleSeconds(absl::Now() - s.submitted);
    t.prompt_tokens = delta.usage.prompt_tokens;
    t.completion_tokens = delta.usage.completion_tokens;
    t.finish_reason = *delta.finish_reason;
    if (m != nullptr) m->OnFinished(t);
    if (options_.request_log.has_value()) {
      // One write per line, so lines from other threads do not interleave.
      const std::string line = absl::StrCat(
          metrics::FormatRequestLog(*options_.request_log, s.log_id, t, delta.usage.cached_tokens),
          "\n");
      std::fwrite(line.data(), 1, line.size(), stderr);
    }
  }
  DeltaCallback on_delta = std::move(s.on_delta);
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->streams.erase(o.id);
  }
  on_delta(std::move(delta));
  state_->idle.notify_all();
}

void ServingEngine::Abort(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->streams.contains(id)) return;
  }
  state_->engine->Abort(id);
}

metrics::ServingMetrics* ServingEngine::AttachMetrics(
    std::unique_ptr<metrics::ServingMetrics> metrics) {
  metrics::ServingMetrics* raw = metrics.get();
  std::lock_guard<std::mutex> lock(state_->mu);
  CHECK(state_->owned_metrics == nullptr) << "metrics attached twice";
  state_->owned_metrics = std::move(metrics);
  state_->metrics.store(raw, std::memory_order_release);
  return raw;
}

metrics::StaticInfo ServingEngine::MetricsInfo(const LlamaModel& model) const {
  metrics::StaticInfo info;
  const AttentionPlan& plan = model.plan();
  info.attention_plan = plan.id.empty() ? "none" : plan.id;
  info.max_model_len = scheduler_config_.max_model_len;
  info.kv_cache_dtype = std::string(DTypeName(pool_.kv_dtype));
  info.block_size = pool_.block_size;
  info.num_blocks = pool_.num_blocks;
  info.bytes_per_token = pool_.bytes_per_token;
  info.unfolded_bytes_per_token = pool_.unfolded_bytes_per_token;
  const int64_t pool_tokens = int64_t{pool_.num_blocks} * pool_.block_size;
  info.sequence_capacity = pool_tokens / scheduler_config_.max_model_len;
  // The same budget without the plan.
  const int64_t unfolded_tokens =
      pool_.memory_bytes / static_cast<int64_t>(pool_.unfolded_bytes_per_token);
  info.unfolded_sequence_capacity =
      unfolded_tokens / pool_.block_size * pool_.block_size / scheduler_config_.max_model_len;
  for (AttentionMode mode : {AttentionMode::kFull, AttentionMode::kShare, AttentionMode::kCluster,
                             AttentionMode::kDrop, AttentionMode::kKvFrom}) {
    int count = 0;
    if (plan.layers.empty()) {
      count = mode == AttentionMode::kFull ? model.config().num_layers : 0;
    } else {
      for (const LayerPlan& layer : plan.layers) count += layer.mode == mode ? 1 : 0;
    }
    info.layers_per_mode.emplace_back(std::string(AttentionModeName(mode)), count);
  }
  info.version = KVFOLD_VERSION;
  info.git_sha = KVFOLD_GIT_SHA;
  return info;
}

void ServingEngine::StartDrain() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->draining = true;
}

bool ServingEngine::draining() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->draining;
}

bool ServingEngine::WaitIdle(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(state_->mu);
  return state_->idle.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                               [this] { return state_->streams.empty(); });
}

void ServingEngine::AbortAll() {
  std::vector<RequestId> ids;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    for (const auto& [id, stream] : state_->streams) ids.push_back(id);
  }
  for (RequestId id : ids) state_->engine->Abort(id);
}

bool ServingEngine::Ready() const {
  const EngineStats stats = state_->engine->Stats();
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->draining || !state_->failure.ok()) return false;
  if (stats.num_steps != state_->seen_steps || state_->streams.empty()) {
    state_->seen_steps = stats.num_steps;
    state_->seen_steps_at = now;
    return true;
  }
  return now - state_->seen_steps_at < options_.stall_timeout;
}

void ServingEngine::Fail(const absl::Status& reason) {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (!state_->failure.ok()) return;
  state_->failure = reason.ok() ? absl::InternalError("the engine failed") : reason;
}

absl::Status ServingEngine::failure() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->failure;
}

EngineStats ServingEngine::Stats() const { return state_->engine->Stats(); }

int32_t ServingEngine::num_live() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return static_cast<int32_t>(state_->streams.size());
}

int32_t ServingEngine::num_queued() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->num_queued;
}

uint64_t RandomSeed() {
  static std::mutex mu;
  static std::mt19937_64 generator{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return generator();
}

}  // namespace kvfold::serving
