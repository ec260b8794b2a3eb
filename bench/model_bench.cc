// Forward-pass speed on real checkpoints: batch-1 decode (tokens/s, the number llama2.c reports)
// and prefill. Run: build/bench/kvfold_model_bench [--model_dir=DIR or FILE.gguf]. Results:
// bench/RESULTS.md.
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/cpu_ops.h"
#include "worker/llama_model.h"
#include "worker/model_loader.h"
#include "worker/sampler.h"
#include "worker/sequence_runner.h"

namespace kvfold {
namespace {

std::string& ModelDir() {
  static std::string* dir = new std::string(KVFOLD_SOURCE_DIR "/models/stories260K");
  return *dir;
}

std::unique_ptr<LlamaModel> LoadModel(Ops& ops) {
  auto ckpt = OpenWeights(ModelDir());
  CHECK(ckpt.ok()) << ckpt.status();
  auto model = LlamaModel::Load(*std::move(ckpt), ops);
  CHECK(model.ok()) << model.status();
  return *std::move(model);
}

// Greedy decode from BOS, one token per step, `range(0)` tokens per sequence (llama2.c's loop).
void BM_Decode(benchmark::State& state) {
  std::unique_ptr<Ops> ops = NewCpuOps(static_cast<int>(state.range(1)));
  std::unique_ptr<LlamaModel> model = LoadModel(*ops);
  const int32_t steps = static_cast<int32_t>(state.range(0));
  int64_t tokens = 0;
  for (auto _ : state) {
    SequenceRunner runner(*model, *ops, steps);
    int32_t next = model->config().bos_token_id.value_or(1);
    for (int32_t i = 0; i < steps; ++i) {
      auto logits = runner.Append(absl::MakeConstSpan(&next, 1));
      CHECK(logits.ok()) << logits.status();
      next = ArgMax(*logits);
    }
    tokens += steps;
  }
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Decode)->ArgsProduct({{256}, {1, 2}})->ArgNames({"steps", "threads"})->UseRealTime();

// One prefill of `range(0)` tokens.
void BM_Prefill(benchmark::State& state) {
  std::unique_ptr<Ops> ops = NewCpuOps(static_cast<int>(state.range(1)));
  std::unique_ptr<LlamaModel> model = LoadModel(*ops);
  const int32_t n = static_cast<int32_t>(state.range(0));
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = 3 + (i * 7919) % (model->config().vocab_size - 3);
  for (auto _ : state) {
    SequenceRunner runner(*model, *ops, n);
    auto logits = runner.Append(ids);
    CHECK(logits.ok()) << logits.status();
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(n) * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Prefill)->ArgsProduct({{256}, {1, 2}})->ArgNames({"tokens", "threads"})->UseRealTime();

}  // namespace
}  // namespace kvfold

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--model_dir=", 0) == 0) kvfold::ModelDir() = arg.substr(12);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
