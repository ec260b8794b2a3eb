#include "server/cli/batch_generate.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <iostream>
#include <limits>
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
#include "server/cli/gpu_memory_setup.h"
#include "server/cli/prompts_file.h"
#include "server/serving/serving_engine.h"

namespace kvfold::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Deltas arrive on the engine thread; the main thread applies them in arrival order.
struct IndexedDelta {
  size_t entry = 0;
  serving::GenerationDelta delta;
};

class DeltaQueue {
 public:
  void Push(IndexedDelta d) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      deltas_.push_back(std::move(d));
    }
    ready_.notify_one();
  }
  IndexedDelta Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [this] { return !deltas_.empty(); });
    IndexedDelta d = std::move(deltas_.front());
    deltas_.pop_front();
    return d;
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<IndexedDelta> deltas_;
};

// One non-blank line of the file and what has become of it.
struct Entry {
  LineResult result;
  Clock::time_point submitted;
  bool got_first_token = false;
  bool done = false;
};

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
void SubmitLine(const std::string& line, size_t index, const LineDefaults& defaults,
                const Tokenizer& tokenizer, serving::ServingEngine& engine, DeltaQueue& queue,
                Entry& entry) {
  auto fail = [&entry](absl::string_view message) {
    entry.result.error = std::string(message);
    entry.done = true;
  };
  absl::StatusOr<PromptLine> parsed = ParsePromptLine(line);
  if (!parsed.ok()) return fail(parsed.status().message());
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(parsed->prompt, true);
  if (!ids.ok()) return fail(ids.status().message());
  serving::GenerationRequest request;
  request.prompt_token_ids = *ids;
  request.max_tokens = parsed->max_tokens.value_or(defaults.max_tokens);
  request.sampling = api::ToSamplingParams(*parsed, defaults.sampling);
  request.stop = std::move(parsed->stop);
  request.stop_token_ids = parsed->stop_token_ids;
  request.ignore_eos = parsed->ignore_eos.value_or(false);
  entry.result.usage.prompt_tokens = static_cast<int32_t>(ids->size());
  entry.submitted = Clock::now();
  absl::StatusOr<RequestId> id =
      engine.Submit(std::move(request), [&queue, index](serving::GenerationDelta d) {
        queue.Push({index, std::move(d)});
      });
  if (!id.ok()) fail(id.status().message());
}

// Applies one delta. Returns true when the request has finished.
bool ApplyDelta(serving::GenerationDelta& d, Entry& e) {
  if (!d.token_ids.empty() && !e.got_first_token) {
    e.result.ttft_ms = Millis(Clock::now() - e.submitted);
    e.got_first_token = true;
  }
  e.result.text += d.text;
  e.result.token_ids.insert(e.result.token_ids.end(), d.token_ids.begin(), d.token_ids.end());
  e.result.logprobs.insert(e.result.logprobs.end(), d.logprobs.begin(), d.logprobs.end());
  if (!d.finish_reason.has_value()) return false;
  if (*d.finish_reason == "error") {
    e.result.error = d.error.empty() ? "the engine failed" : d.error;
    e.result.error_type = "server_error";
  }
  e.result.finish_reason = *d.finish_reason;
  e.result.usage = d.usage;
  e.result.latency_ms = Millis(Clock::now() - e.submitted);
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

void PrintSummary(const std::vector<Entry>& entries, const serving::PoolInfo& pool,
                  int32_t max_model_len, const EngineStats& stats, Clock::duration elapsed) {
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
  const int64_t pool_tokens = int64_t{pool.num_blocks} * pool.block_size;
  std::cerr << absl::StrFormat(
      "generate: %d requests (%d failed) in %.3f s: %d prompt + %d output tokens, %.1f output "
      "tokens/s, %.2f requests/s, mean time to first token %.1f ms\n",
      entries.size(), failed, seconds, prompt_tokens, output_tokens, output_tokens / seconds,
      ok / seconds, ok > 0 ? ttft_sum / ok : 0.0);
  std::cerr << absl::StrFormat(
      "kv pool: %d blocks x %d tokens (%s, %d bytes/token, %d bytes) = %d tokens, %d sequences "
      "of %d tokens; %d steps, %d preemptions, prefix cache %d/%d tokens hit\n",
      pool.num_blocks, pool.block_size, DTypeName(pool.kv_dtype), pool.bytes_per_token,
      pool_tokens * static_cast<int64_t>(pool.bytes_per_token), pool_tokens,
      pool_tokens / max_model_len, max_model_len, stats.num_steps, stats.num_preemptions,
      stats.prefix_cache_hits, stats.prefix_cache_queries);
}

}  // namespace

int RunPromptsFile(LoadedModel& loaded, const std::string& path, const LineDefaults& defaults) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "kvfold generate: " << s.message() << "\n";
    return 1;
  };
  LlamaModel& model = *loaded.model;
  Ops& ops = *loaded.ops;
  const Tokenizer& tokenizer = *loaded.tokenizer;
  absl::StatusOr<SchedulerConfig> scheduler = SchedulerConfigFromFlags(model.config());
  if (!scheduler.ok()) return fail(scheduler.status());
  absl::StatusOr<CacheConfig> cache = EngineCacheConfig(loaded, *scheduler);
  if (!cache.ok()) return fail(cache.status());
  std::vector<std::string> lines;
  absl::StatusOr<std::vector<Entry>> read = ReadEntries(path, lines);
  if (!read.ok()) return fail(read.status());
  std::vector<Entry>& entries = *read;
  DeltaQueue queue;  // outlives the engine, whose callbacks push into it
  absl::StatusOr<std::unique_ptr<serving::ServingEngine>> engine =
      serving::ServingEngine::Create(model, ops, tokenizer, *cache, *scheduler,
                                     {.max_queued_requests = std::numeric_limits<int32_t>::max(),
                                      .device_sampler = loaded.sampler.get()});
  if (!engine.ok()) return fail(engine.status());
  const serving::PoolInfo& pool = (*engine)->pool();
  std::cerr << KvMemoryLine(model, absl::GetFlag(FLAGS_attention_plan), pool.kv_dtype,
                            pool.num_blocks, pool.block_size, scheduler->max_model_len,
                            pool.memory_bytes)
            << "\n";
  const Clock::time_point start = Clock::now();
  size_t live = 0, next_to_print = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    SubmitLine(lines[i], i, defaults, tokenizer, **engine, queue, entries[i]);
    if (!entries[i].done) ++live;
  }
  while (live > 0) {
    IndexedDelta d = queue.Pop();
    CHECK_LT(d.entry, entries.size()) << "a delta for an unknown line";
    if (ApplyDelta(d.delta, entries[d.entry])) --live;
    PrintReady(entries, next_to_print);
  }
  PrintReady(entries, next_to_print);
  PrintSummary(entries, pool, scheduler->max_model_len, (*engine)->Stats(), Clock::now() - start);
  return 0;
}

}  // namespace kvfold::cli
