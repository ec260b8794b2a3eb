// Scheduler step overhead: Schedule + Update (and building the StepPlan) with N running sequences
// in steady decode, against an executor that does nothing but return one token per sampling
// chunk. Each run starts N sequences with 512-token prompts (prefilled untimed), then times 1024
// decode steps, so contexts grow from 512 to 1536 tokens (block tables of 32 to 96 blocks of 16)
// and every sequence fills a block, which is then hashed into the prefix cache, every 16 steps.
// Run: build/bench/kvfold_scheduler_bench. Results: bench/RESULTS.md.
#include <vector>

#include "benchmark/benchmark.h"
#include "glog/logging.h"
#include "scheduler/block_manager.h"
#include "scheduler/scheduler.h"
#include "scheduler/step_plan.h"

namespace kvfold {
namespace {

constexpr int32_t kBlockSize = 16;
constexpr int32_t kPromptTokens = 512;
constexpr int32_t kDecodeSteps = 1024;

// One token per sampling chunk, nothing else: what is left is the scheduler's own cost.
StepResult TrivialExecute(const StepPlan& plan) {
  StepResult result;
  result.sampled.reserve(plan.chunks.size());
  for (const ScheduledChunk& chunk : plan.chunks) {
    if (chunk.sample) result.sampled.push_back({.request_id = chunk.request_id, .token_id = 7});
  }
  return result;
}

void BM_SchedulerDecodeStep(benchmark::State& state) {
  const auto num_seqs = static_cast<int32_t>(state.range(0));
  SchedulerConfig config;
  config.max_num_batched_tokens = 8192;
  config.max_num_seqs = num_seqs;
  config.eos_token_ids = {2};
  // Room for the decode steps plus the ones early sequences take while later ones prefill.
  const int32_t blocks_per_seq = (kPromptTokens + kDecodeSteps + 512) / kBlockSize;
  BlockManager blocks(num_seqs * blocks_per_seq, kBlockSize);
  Scheduler scheduler(config, blocks);
  for (int32_t i = 0; i < num_seqs; ++i) {
    Request request;
    request.id = static_cast<RequestId>(i);
    request.max_tokens = 1 << 30;
    for (int32_t t = 0; t < kPromptTokens; ++t) request.prompt_token_ids.push_back(10 + i + t);
    CHECK(scheduler.Add(std::move(request)).ok());
  }
  // Prefill, untimed, until every sequence decodes one token per step.
  while (true) {
    const StepPlan plan = scheduler.Schedule();
    scheduler.Update(plan, TrivialExecute(plan));
    if (scheduler.num_waiting() == 0 && plan.num_tokens() == num_seqs) break;
  }
  for (auto _ : state) {
    const StepPlan plan = scheduler.Schedule();
    std::vector<RequestOutput> outputs = scheduler.Update(plan, TrivialExecute(plan));
    benchmark::DoNotOptimize(outputs.data());
  }
  CHECK_EQ(scheduler.num_running(), num_seqs);
  CHECK_EQ(scheduler.num_preemptions(), 0);
  state.SetItemsProcessed(state.iterations() * num_seqs);
  state.counters["seqs"] = num_seqs;
}
BENCHMARK(BM_SchedulerDecodeStep)
    ->Arg(256)
    ->Arg(1024)
    ->Iterations(kDecodeSteps)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvfold

BENCHMARK_MAIN();
