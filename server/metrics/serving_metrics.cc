#include "server/metrics/serving_metrics.h"

#include "absl/strings/str_cat.h"

namespace kvfold::metrics {
namespace {

// vLLM's buckets, so its dashboards' quantiles read the same.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kTokenLatencyBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                                  0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                                  7.5,  10.0,  20.0, 40.0,  80.0};
const std::vector<double> kRequestLatencyBuckets = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const std::vector<double> kTokenCountBuckets = {1,   2,    5,    10,   20,    50,    100,   200,
                                                500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};

}  // namespace

ServingMetrics::ServingMetrics(const std::string& model_name, const StaticInfo& info)
    : registry_({{"model_name", model_name}}),
      running_(
          registry_.AddGauge("kvfold_num_requests_running", "Generations in the running batch.")
              .With({})),
      waiting_(
          registry_.AddGauge("kvfold_num_requests_waiting", "Generations waiting to be scheduled.")
              .With({})),
      kv_usage_(
          registry_
              .AddGauge("kvfold_kv_cache_usage_perc", "Fraction of KV cache blocks in use, 0 to 1.")
              .With({})),
      kv_blocks_(
          registry_.AddGauge("kvfold_kv_cache_blocks", "KV cache blocks in the pool.").With({})),
      prefix_queries_(registry_
                          .AddCounter("kvfold_prefix_cache_queries_total",
                                      "Prompt tokens looked up in the prefix cache.")
                          .With({})),
      prefix_hits_(registry_
                       .AddCounter("kvfold_prefix_cache_hits_total",
                                   "Prompt tokens found in the prefix cache.")
                       .With({})),
      preemptions_(registry_
                       .AddCounter("kvfold_num_preemptions_total",
                                   "Running sequences preempted (recomputed later).")
                       .With({})),
      prompt_tokens_(
          registry_
              .AddCounter("kvfold_prompt_tokens_total", "Prompt tokens of finished generations.")
              .With({})),
      generation_tokens_(registry_
                             .AddCounter("kvfold_generation_tokens_total",
                                         "Generated tokens, counted as they are produced.")
                             .With({})),
      success_(registry_.AddCounter("kvfold_request_success_total",
                                    "Finished generations by finish reason.", {"finished_reason"})),
      request_prompt_tokens_(registry_
                                 .AddHistogram("kvfold_request_prompt_tokens",
                                               "Prompt tokens per generation.", kTokenCountBuckets)
                                 .With({})),
      request_generation_tokens_(registry_
                                     .AddHistogram("kvfold_request_generation_tokens",
                                                   "Output tokens per generation.",
                                                   kTokenCountBuckets)
                                     .With({})),
      ttft_(registry_
                .AddHistogram("kvfold_time_to_first_token_seconds",
                              "Submission to first output token.", kTtftBuckets)
                .With({})),
      itl_(registry_
               .AddHistogram("kvfold_inter_token_latency_seconds",
                             "Gap between consecutive output tokens.", kTokenLatencyBuckets)
               .With({})),
      tpot_(registry_
                .AddHistogram("kvfold_request_time_per_output_token_seconds",
                              "(last token - first token) / (tokens - 1), per generation.",
                              kTokenLatencyBuckets)
                .With({})),
      e2e_(registry_
               .AddHistogram("kvfold_e2e_request_latency_seconds", "Submission to finish.",
                             kRequestLatencyBuckets)
               .With({})),
      queue_(registry_
                 .AddHistogram("kvfold_request_queue_time_seconds",
                               "Submission to first scheduled step.", kRequestLatencyBuckets)
                 .With({})),
      prefill_(registry_
                   .AddHistogram("kvfold_request_prefill_time_seconds",
                                 "First scheduled step to first output token.",
                                 kRequestLatencyBuckets)
                   .With({})),
      decode_(registry_
                  .AddHistogram("kvfold_request_decode_time_seconds",
                                "First output token to finish.", kRequestLatencyBuckets)
                  .With({})),
      iteration_tokens_(
          registry_
              .AddHistogram("kvfold_iteration_tokens",
                            "Tokens per engine step (prefill and decode).",
                            {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384})
              .With({})) {
  Family<Gauge>& bytes = registry_.AddGauge(
      "kvfold_kv_bytes_per_token",
      "KV bytes one token occupies across all layers, under the attention plan and without it.",
      {"kind"});
  bytes.With({"plan"}).Set(static_cast<double>(info.bytes_per_token));
  bytes.With({"unfolded"}).Set(static_cast<double>(info.unfolded_bytes_per_token));
  Family<Gauge>& capacity = registry_.AddGauge(
      "kvfold_kv_sequence_capacity",
      "Sequences of max_model_len tokens the KV pool holds, with and without the plan.", {"kind"});
  capacity.With({"plan"}).Set(static_cast<double>(info.sequence_capacity));
  capacity.With({"unfolded"}).Set(static_cast<double>(info.unfolded_sequence_capacity));
  Family<Gauge>& layers = registry_.AddGauge("kvfold_attention_layers",
                                             "Layers per attention mode in the plan.", {"mode"});
  for (const auto& [mode, count] : info.layers_per_mode) layers.With({mode}).Set(count);
  registry_.AddGauge("kvfold_build_info", "The kvfold binary.", {"version", "git_sha"})
      .With({info.version, info.git_sha})
      .Set(1);
  registry_
      .AddGauge("kvfold_model_info", "The served model and its KV cache configuration.",
                {"attention_plan", "max_model_len", "kv_cache_dtype", "block_size"})
      .With({info.attention_plan, absl::StrCat(info.max_model_len), info.kv_cache_dtype,
             absl::StrCat(info.block_size)})
      .Set(1);
  kv_blocks_.Set(info.num_blocks);
  for (const char* reason : {"stop", "length", "abort", "error"}) success_.With({reason});
}

void ServingMetrics::OnStep(const StepInfo& step) { iteration_tokens_.Observe(step.num_tokens); }

void ServingMetrics::OnTokens(int32_t count, double seconds_since_previous_token) {
  if (count <= 0) return;
  generation_tokens_.Add(count);
  if (seconds_since_previous_token < 0) return;  // the first token: TTFT, not ITL
  // Tokens that arrive together share the gap (one per step normally).
  for (int32_t i = 0; i < count; ++i) itl_.Observe(seconds_since_previous_token / count);
}

void ServingMetrics::OnFinished(const GenerationTimeline& t) {
  success_.With({t.finish_reason}).Add();
  prompt_tokens_.Add(t.prompt_tokens);
  request_prompt_tokens_.Observe(t.prompt_tokens);
  request_generation_tokens_.Observe(t.completion_tokens);
  e2e_.Observe(t.finished);
  if (t.first_scheduled >= 0) queue_.Observe(t.first_scheduled);
  if (t.first_token >= 0) {
    ttft_.Observe(t.first_token);
    decode_.Observe(t.finished - t.first_token);
    if (t.first_scheduled >= 0) prefill_.Observe(t.first_token - t.first_scheduled);
    if (t.completion_tokens > 1) {
      tpot_.Observe((t.last_token - t.first_token) / (t.completion_tokens - 1));
    }
  }
}

std::string ServingMetrics::Scrape(const EngineStats& stats) {
  running_.Set(stats.num_running);
  waiting_.Set(stats.num_waiting);
  kv_blocks_.Set(stats.num_blocks);
  kv_usage_.Set(stats.num_blocks > 0
                    ? 1.0 - static_cast<double>(stats.num_free_blocks) / stats.num_blocks
                    : 0.0);
  prefix_queries_.Set(static_cast<double>(stats.prefix_cache_queries));
  prefix_hits_.Set(static_cast<double>(stats.prefix_cache_hits));
  preemptions_.Set(static_cast<double>(stats.num_preemptions));
  return registry_.Exposition();
}

}  // namespace kvfold::metrics
