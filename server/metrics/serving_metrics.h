// The server's metrics (docs/metrics.md is the list): what ServingEngine observes per step and
// per generation, and the engine's gauges read at scrape time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scheduler/engine.h"
#include "server/metrics/metric_registry.h"

namespace kvfold::metrics {

// One finished generation's timeline, in seconds since its submission (negative: never reached).
struct GenerationTimeline {
  double first_scheduled = -1;
  double first_token = -1;
  double last_token = -1;
  double finished = 0;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  std::string finish_reason;  // stop, length, abort, error
};

// What does not change while serving: the pool, the plan, the build.
struct StaticInfo {
  std::string attention_plan = "none";  // plan id
  int32_t max_model_len = 0;
  std::string kv_cache_dtype;
  int32_t block_size = 0;
  int32_t num_blocks = 0;
  size_t bytes_per_token = 0;
  size_t unfolded_bytes_per_token = 0;
  int64_t sequence_capacity = 0;
  int64_t unfolded_sequence_capacity = 0;
  std::vector<std::pair<std::string, int>> layers_per_mode;  // ("full", 20), ("share", 6), ...
  std::string version;
  std::string git_sha;
};

class ServingMetrics {
 public:
  ServingMetrics(const std::string& model_name, const StaticInfo& info);

  // Engine thread.
  void OnStep(const StepInfo& step);
  void OnTokens(int32_t count, double seconds_since_previous_token);  // a delta's new tokens
  void OnFinished(const GenerationTimeline& timeline);

  // Any thread: reads the engine's gauges and renders every metric.
  std::string Scrape(const EngineStats& stats);

 private:
  Registry registry_;
  Gauge& running_;
  Gauge& waiting_;
  Gauge& kv_usage_;
  Gauge& kv_blocks_;
  Counter& prefix_queries_;
  Counter& prefix_hits_;
  Counter& preemptions_;
  Counter& prompt_tokens_;
  Counter& generation_tokens_;
  Family<Counter>& success_;
  Histogram& request_prompt_tokens_;
  Histogram& request_generation_tokens_;
  Histogram& ttft_;
  Histogram& itl_;
  Histogram& tpot_;
  Histogram& e2e_;
  Histogram& queue_;
  Histogram& prefill_;
  Histogram& decode_;
  Histogram& iteration_tokens_;
};

}  // namespace kvfold::metrics
