#include "server/cli/batch_generate.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "scheduler/engine.h"
#include "server/api/sampling_fields.h"
#include "server/cli/attention_plan_setup.h"
#include "server/cli/common_flags.h"
#include "server/cli/engine_flags.h"
#include "server/cli/prompts_file.h"
#include "server/output/text_output.h"
#include "worker/kv_cache.h"
#include "worker/model_executor.h"

namespace kvfold::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Engine callbacks run on the engine thread and must be short: they only hand the delta over.
class DeltaQueue {
 public:
  void Push(const RequestOutput& o) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      deltas_.push_back(o);
    }
    ready_.notify_one();
  }
  RequestOutput Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [this] { return !deltas_.empty(); });
    RequestOutput o = std::move(deltas_.front());
    deltas_.pop_front();
    return o;
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<RequestOutput> deltas_;
};

// One non-blank line of the file and what has become of it.
struct Entry {
  LineResult result;
  std::unique_ptr<TextOutput> output;  // set while the request runs
  Clock::time_point submitted;
  bool got_first_token = false;
  bool done = false;
};

// The KV pool and engine settings, all from flags, checked before anything runs.
struct EngineSetup {
  CacheConfig cache;
  SchedulerConfig scheduler;
  size_t bytes_per_token = 0;
  int32_t num_blocks = 0;
};

absl::StatusOr<EngineSetup> MakeSetup(const ModelConfig& model, const AttentionPlan& plan) {
  EngineSetup s;
  absl::StatusOr<CacheConfig> cache = CacheConfigFromFlags();
  if (!cache.ok()) return cache.status();
  s.cache = *cache;
  absl::StatusOr<SchedulerConfig> scheduler = SchedulerConfigFromFlags(model);
  if (!scheduler.ok()) return scheduler.status();
  s.scheduler = *scheduler;
  s.bytes_per_token = KvCache::BytesPerToken(model, plan, s.cache.kv_dtype);
  if (s.bytes_per_token == 0) {
    return absl::InvalidArgumentError(
        "the attention plan stores no K/V in any layer, so the KV pool has no size");
  }
  absl::StatusOr<int32_t> blocks =
      NumKvBlocks(s.cache, s.bytes_per_token, s.scheduler.max_model_len);
  if (!blocks.ok()) return blocks.status();
  s.num_blocks = *blocks;
  return s;
}

// The file's non-blank lines, numbered from 1 as in the file.
absl::StatusOr<std::vector<Entry>> ReadEntries(const std::string& path,
                                               std::vector<std::string>& lines) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --prompts-file ", path));
  std::vector<Entry> entries;
  std::string line;
  for (int32_t number = 1; std::getline(in, line); ++number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    entries.emplace_back();
    entries.back().result.line = number;
    lines.push_back(line);
  }
  return entries;
}

// Parses, tokenizes and submits one line; on failure records the error instead.
void SubmitLine(const std::string& line, RequestId id, const LineDefaults& defaults,
                const Tokenizer& tokenizer, Engine& engine, DeltaQueue& queue, Entry& entry) {
  auto fail = [&entry](absl::string_view message) {
    entry.result.error = std::string(message);
    entry.done = true;
  };
  absl::StatusOr<PromptLine> parsed = ParsePromptLine(line);
  if (!parsed.ok()) return fail(parsed.status().message());
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(parsed->prompt, true);
  if (!ids.ok()) return fail(ids.status().message());
  Request request;
  request.id = id;
  request.prompt_token_ids = *ids;
  request.max_tokens = parsed->max_tokens.value_or(defaults.max_tokens);
  request.sampling = api::ToSamplingParams(*parsed, defaults.sampling);
  request.stop_token_ids = parsed->stop_token_ids;
  request.ignore_eos = parsed->ignore_eos.value_or(false);
  entry.output = std::make_unique<TextOutput>(tokenizer, *ids, std::move(parsed->stop));
  entry.result.usage.prompt_tokens = static_cast<int32_t>(ids->size());
  entry.submitted = Clock::now();
  absl::Status s =
      engine.Submit(std::move(request), [&queue](const RequestOutput& o) { queue.Push(o); });
  if (!s.ok()) fail(s.message());
}

// Applies one delta; aborts the request when a stop string appears. Returns true when the
// request has finished.
bool ApplyDelta(const RequestOutput& o, Engine& engine, Entry& e) {
  if (!o.token_ids.empty() && !e.got_first_token) {
    e.result.ttft_ms = Millis(Clock::now() - e.submitted);
    e.got_first_token = true;
  }
  e.result.logprobs.insert(e.result.logprobs.end(), o.logprobs.begin(), o.logprobs.end());
  for (int32_t id : o.token_ids) {
    if (e.output->stopped() || !e.result.error.empty()) break;
    absl::StatusOr<bool> stopped = e.output->Push(id);
    if (!stopped.ok()) {
      e.result.error = std::string(stopped.status().message());
      e.result.error_type = "server_error";
    }
    if (!stopped.ok() || *stopped) engine.Abort(o.id);
  }
  if (!o.finish_reason.has_value()) return false;
  if (!e.output->stopped() && e.result.error.empty()) {
    if (absl::Status s = e.output->Finish(); !s.ok()) e.result.error = std::string(s.message());
  }
  if (*o.finish_reason == FinishReason::kError && !e.output->stopped()) {
    e.result.error = o.error.empty() ? "the engine failed" : o.error;
    e.result.error_type = "server_error";
  }
  e.result.finish_reason = e.output->stopped() ? "stop" : FinishReasonName(*o.finish_reason);
  e.result.text = e.output->text();
  e.result.token_ids = e.output->token_ids();
  if (e.result.logprobs.size() > e.result.token_ids.size()) {  // a stop string cut the tokens
    e.result.logprobs.resize(e.result.token_ids.size());
  }
  e.result.usage = o.usage;
  e.result.usage.completion_tokens = static_cast<int32_t>(e.result.token_ids.size());
  e.result.latency_ms = Millis(Clock::now() - e.submitted);
  e.output.reset();
  e.done = true;
  return true;
}

// Prints the finished entries from `next` on, stopping at the first unfinished one.
void PrintReady(const std::vector<Entry>& entries, size_t& next) {
  bool printed = false;
  for (; next < entries.size() && entries[next].done; ++next) {
    std::cout << FormatLineResult(entries[next].result) << "\n";
    printed = true;
  }
  if (printed) std::cout << std::flush;
}

void PrintSummary(const std::vector<Entry>& entries, const EngineSetup& setup,
                  const EngineStats& stats, Clock::duration elapsed) {
  int64_t failed = 0, output_tokens = 0, prompt_tokens = 0;
  double ttft_sum = 0;
  for (const Entry& e : entries) {
    if (!e.result.error.empty()) {
      ++failed;
      continue;
    }
    output_tokens += e.result.usage.completion_tokens;
    prompt_tokens += e.result.usage.prompt_tokens;
    ttft_sum += e.result.ttft_ms;
  }
  const double seconds = Millis(elapsed) / 1e3;
  const int64_t ok = static_cast<int64_t>(entries.size()) - failed;
  const int64_t pool_tokens = int64_t{setup.num_blocks} * setup.cache.block_size;
  std::cerr << absl::StrFormat(
      "generate: %d requests (%d failed) in %.3f s: %d prompt + %d output tokens, %.1f output "
      "tokens/s, %.2f requests/s, mean time to first token %.1f ms\n",
      entries.size(), failed, seconds, prompt_tokens, output_tokens, output_tokens / seconds,
      ok / seconds, ok > 0 ? ttft_sum / ok : 0.0);
  std::cerr << absl::StrFormat(
      "kv pool: %d blocks x %d tokens (%s, %d bytes/token, %d bytes) = %d tokens, %d sequences "
      "of %d tokens; %d steps, %d preemptions, prefix cache %d/%d tokens hit\n",
      setup.num_blocks, setup.cache.block_size, DTypeName(setup.cache.kv_dtype),
      setup.bytes_per_token, pool_tokens * static_cast<int64_t>(setup.bytes_per_token), pool_tokens,
      pool_tokens / setup.scheduler.max_model_len, setup.scheduler.max_model_len, stats.num_steps,
      stats.num_preemptions, stats.prefix_cache_hits, stats.prefix_cache_queries);
}

}  // namespace

int RunPromptsFile(LlamaModel& model, Ops& ops, const Tokenizer& tokenizer, const std::string& path,
                   const LineDefaults& defaults) {
  absl::StatusOr<EngineSetup> setup = MakeSetup(model.config(), model.plan());
  if (!setup.ok()) {
    std::cerr << "kvfold generate: " << setup.status().message() << "\n";
    return 1;
  }
  std::vector<std::string> lines;
  absl::StatusOr<std::vector<Entry>> read = ReadEntries(path, lines);
  if (!read.ok()) {
    std::cerr << "kvfold generate: " << read.status().message() << "\n";
    return 1;
  }
  std::vector<Entry>& entries = *read;
  std::cerr << KvMemoryLine(model.config(), model.plan(), absl::GetFlag(FLAGS_attention_plan),
                            setup->cache.kv_dtype, setup->num_blocks, setup->cache.block_size,
                            setup->scheduler.max_model_len, setup->cache.memory_bytes)
            << "\n";
  KvCache cache(ops, model.kv_layer_shapes(), setup->num_blocks, setup->cache.block_size,
                setup->cache.kv_dtype);
  ModelExecutor executor(model, cache);
  DeltaQueue queue;  // outlives the engine, whose callbacks push into it
  const Clock::time_point start = Clock::now();
  // Blocks cached under one attention plan are never reused under another.
  Engine engine(setup->scheduler, setup->num_blocks, setup->cache.block_size,
                model.plan().cache_salt(), executor);
  size_t live = 0, next_to_print = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    SubmitLine(lines[i], i, defaults, tokenizer, engine, queue, entries[i]);
    if (!entries[i].done) ++live;
  }
  while (live > 0) {
    const RequestOutput o = queue.Pop();
    CHECK_LT(o.id, entries.size()) << "a delta for an unknown request";
    if (ApplyDelta(o, engine, entries[o.id])) --live;
    PrintReady(entries, next_to_print);
  }
  PrintReady(entries, next_to_print);
  PrintSummary(entries, *setup, engine.Stats(), Clock::now() - start);
  return 0;
}

}  // namespace kvfold::cli
