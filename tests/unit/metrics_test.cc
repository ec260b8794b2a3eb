#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/metrics/metric_registry.h"
#include "server/metrics/request_log.h"
#include "server/metrics/serving_metrics.h"

namespace kvfold::metrics {
namespace {

using ::testing::HasSubstr;

TEST(MetricRegistryTest, ExpositionFollowsTheTextFormat) {
  Registry registry(Labels{{"model_name", "m\"1"}});
  registry.AddCounter("x_total", "Things\nseen.", {"kind"}).With({"a\\b"}).Add(3);
  registry.AddGauge("y", "A level.").With({}).Set(0.25);
  Histogram& h = registry.AddHistogram("z_seconds", "Latency.", {0.1, 1.0}).With({});
  h.Observe(0.05);
  h.Observe(0.1);  // on a bound: counts in that bucket (le is inclusive)
  h.Observe(0.5);
  h.Observe(7);
  EXPECT_EQ(registry.Exposition(),
            "# HELP x_total Things\\nseen.\n"
            "# TYPE x_total counter\n"
            "x_total{model_name=\"m\\\"1\",kind=\"a\\\\b\"} 3\n"
            "# HELP y A level.\n"
            "# TYPE y gauge\n"
            "y{model_name=\"m\\\"1\"} 0.25\n"
            "# HELP z_seconds Latency.\n"
            "# TYPE z_seconds histogram\n"
            "z_seconds_bucket{model_name=\"m\\\"1\",le=\"0.1\"} 2\n"
            "z_seconds_bucket{model_name=\"m\\\"1\",le=\"1\"} 3\n"
            "z_seconds_bucket{model_name=\"m\\\"1\",le=\"+Inf\"} 4\n"
            "z_seconds_sum{model_name=\"m\\\"1\"} 7.65\n"
            "z_seconds_count{model_name=\"m\\\"1\"} 4\n");
}

TEST(MetricRegistryTest, ValuesRoundTrip) {
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(FormatValue(123456789012345.0), "123456789012345");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatValue(0.0 / 0.0), "NaN");
}

StaticInfo Info() {
  StaticInfo info;
  info.attention_plan = "abc";
  info.max_model_len = 256;
  info.kv_cache_dtype = "bf16";
  info.block_size = 16;
  info.num_blocks = 10;
  info.bytes_per_token = 100;
  info.unfolded_bytes_per_token = 200;
  info.sequence_capacity = 4;
  info.unfolded_sequence_capacity = 2;
  info.layers_per_mode = {{"full", 3}, {"share", 2}};
  info.version = "0.1.0";
  info.git_sha = "deadbeef";
  return info;
}

TEST(ServingMetricsTest, GenerationsLandInTheirSeries) {
  ServingMetrics m("tiny", Info());
  m.OnStep({.num_tokens = 12, .num_sequences = 1});
  m.OnTokens(1, -1);  // the first token: counted, no ITL
  m.OnTokens(1, 0.02);
  m.OnTokens(2, 0.04);  // two at once share the gap
  m.OnFinished({.first_scheduled = 0.01,
                .first_token = 0.05,
                .last_token = 0.11,
                .finished = 0.12,
                .prompt_tokens = 12,
                .completion_tokens = 4,
                .finish_reason = "length"});
  EngineStats stats;
  stats.num_running = 1;
  stats.num_waiting = 2;
  stats.num_blocks = 10;
  stats.num_free_blocks = 4;
  stats.prefix_cache_queries = 32;
  stats.prefix_cache_hits = 16;
  const std::string text = m.Scrape(stats);
  EXPECT_THAT(text, HasSubstr("kvfold_generation_tokens_total{model_name=\"tiny\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_prompt_tokens_total{model_name=\"tiny\"} 12\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_request_success_total{model_name=\"tiny\",finished_reason="
                              "\"length\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_request_success_total{model_name=\"tiny\",finished_reason="
                              "\"error\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_inter_token_latency_seconds_count{model_name=\"tiny\"} 3\n"));
  EXPECT_THAT(text,
              HasSubstr("kvfold_inter_token_latency_seconds_sum{model_name=\"tiny\"} 0.06\n"));
  EXPECT_THAT(text,
              HasSubstr("kvfold_time_to_first_token_seconds_sum{model_name=\"tiny\"} 0.05\n"));
  EXPECT_THAT(text,
              HasSubstr("kvfold_request_time_per_output_token_seconds_sum{model_name=\"tiny\"} "
                        "0.02\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_kv_cache_usage_perc{model_name=\"tiny\"} 0.6\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_num_requests_waiting{model_name=\"tiny\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_prefix_cache_hits_total{model_name=\"tiny\"} 16\n"));
  EXPECT_THAT(text,
              HasSubstr("kvfold_kv_bytes_per_token{model_name=\"tiny\",kind=\"unfolded\"} 200\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_attention_layers{model_name=\"tiny\",mode=\"share\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("kvfold_iteration_tokens_count{model_name=\"tiny\"} 1\n"));
}

TEST(RequestLogTest, JsonLineCarriesCountsAndTimingsButNoText) {
  GenerationTimeline t{.first_scheduled = 0.002,
                       .first_token = 0.01,
                       .last_token = 0.05,
                       .finished = 0.06,
                       .prompt_tokens = 7,
                       .completion_tokens = 5,
                       .finish_reason = "stop"};
  const nlohmann::json j =
      nlohmann::json::parse(FormatRequestLog(LogFormat::kJson, "cmpl-1:0", t, 4));
  EXPECT_EQ(j["request_id"], "cmpl-1:0");
  EXPECT_EQ(j["finish_reason"], "stop");
  EXPECT_EQ(j["prompt_tokens"], 7);
  EXPECT_EQ(j["completion_tokens"], 5);
  EXPECT_EQ(j["cached_tokens"], 4);
  EXPECT_DOUBLE_EQ(j["ttft_ms"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(j["tpot_ms"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(j["e2e_ms"].get<double>(), 60.0);
  EXPECT_EQ(FormatRequestLog(LogFormat::kText, "r", t, 0),
            "request r finished: reason=stop prompt_tokens=7 completion_tokens=5 cached_tokens=0 "
            "queue_ms=2.0 ttft_ms=10.0 tpot_ms=10.00 e2e_ms=60.0");
  EXPECT_FALSE(ParseLogFormat("yaml").ok());
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
}

// promtool (Debian's prometheus package, installed by scripts/setup.sh) is the independent
// check of the exposition.
TEST(ServingMetricsTest, PromtoolAcceptsTheScrape) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool is absent (scripts/setup.sh installs Debian's prometheus package)";
  }
  ServingMetrics m("tiny", Info());
  m.OnTokens(1, -1);
  m.OnFinished(
      {.finished = 0.5, .prompt_tokens = 3, .completion_tokens = 1, .finish_reason = "stop"});
  const std::string path = ::testing::TempDir() + "/kvfold_metrics.txt";
  std::ofstream(path) << m.Scrape(EngineStats{});
  const std::string command = "promtool check metrics < " + path + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << output;
}

}  // namespace
}  // namespace kvfold::metrics
