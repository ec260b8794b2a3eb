// Forward-pass speed on real checkpoints: decode at batch 1 (tokens/s, the number llama2.c
// reports) and at batch 16 (16 sequences decoding together, tokens/s over all of them), and
// prefill. Run:
//   build/bench/kvfold_model_bench [--model_dir=DIR or FILE.gguf] [--decode_steps=256]
//                                  [--prompt_tokens=256] [--kv_dtype=bf16|f32]
// Each decode benchmark also reports bytes_per_step (weights + KV at the run's mean context; see
// decode_bytes.h), the numerator of the roofline. Results: bench/RESULTS.md.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "bench/decode_bytes.h"
#include "benchmark/benchmark.h"
#include "kernels/cpu/cpu_ops.h"
#include "worker/llama_model.h"
#include "worker/lockstep_batch.h"
#include "worker/model_loader.h"
#include "worker/sampler.h"
#include "worker/sequence_runner.h"

namespace kvfold {
namespace {

struct Options {
  std::string model = KVFOLD_SOURCE_DIR "/models/stories260K";
  int decode_steps = 256;
  int prompt_tokens = 256;
  DType kv_dtype = DType::kBF16;  // `kvfold generate`'s default (--kv-cache-dtype auto)
};

Options& Opts() {
  static Options* options = new Options;
  return *options;
}

std::unique_ptr<LlamaModel> LoadModel(Ops& ops) {
  auto ckpt = OpenWeights(Opts().model);
  CHECK(ckpt.ok()) << ckpt.status();
  auto model = LlamaModel::Load(*std::move(ckpt), ops);
  CHECK(model.ok()) << model.status();
  return *std::move(model);
}

// Bytes one decode step of `batch` sequences reads at the mean context of a `steps`-step run.
double BytesPerStep(int batch, int steps) {
  auto source = OpenWeights(Opts().model);
  CHECK(source.ok()) << source.status();
  auto bytes = ComputeDecodeBytes(**source, Opts().kv_dtype);
  CHECK(bytes.ok()) << bytes.status();
  return static_cast<double>(bytes->PerStep((steps + 1) / 2, batch));
}

// Greedy decode from BOS, one token per step, range(0) tokens per sequence (llama2.c's loop).
void BM_Decode(benchmark::State& state) {
  std::unique_ptr<Ops> ops = NewCpuOps(static_cast<int>(state.range(1)));
  std::unique_ptr<LlamaModel> model = LoadModel(*ops);
  const int32_t steps = static_cast<int32_t>(state.range(0));
  int64_t tokens = 0;
  for (auto _ : state) {
    SequenceRunner runner(*model, *ops, steps, Opts().kv_dtype);
    int32_t next = model->config().bos_token_id.value_or(1);
    for (int32_t i = 0; i < steps; ++i) {
      auto logits = runner.Append(absl::MakeConstSpan(&next, 1));
      CHECK(logits.ok()) << logits.status();
      next = ArgMax(*logits);
    }
    tokens += steps;
  }
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
  state.counters["bytes_per_step"] = BytesPerStep(1, steps);
}

// range(0) sequences decoding together for range(1) steps: every step is one forward pass over
// one new token of each sequence (what the engine runs in steady decode). Sequence s starts from
// a different token, then follows its own greedy continuation.
void BM_DecodeBatch(benchmark::State& state) {
  std::unique_ptr<Ops> ops = NewCpuOps(static_cast<int>(state.range(2)));
  std::unique_ptr<LlamaModel> model = LoadModel(*ops);
  const ModelConfig& config = model->config();
  const int32_t batch = static_cast<int32_t>(state.range(0));
  const int32_t steps = static_cast<int32_t>(state.range(1));
  const int32_t block_size = SequenceRunner::kBlockSize;
  const int32_t blocks_per_seq = (steps + block_size - 1) / block_size;
  LockstepBatch batches(blocks_per_seq, block_size, batch);  // sequence s: its own blocks
  std::vector<int32_t> tokens(batch);
  std::vector<float> logits(static_cast<size_t>(batch) * config.vocab_size);
  int64_t generated = 0;
  for (auto _ : state) {
    KvCache cache(*ops, config, batch * blocks_per_seq, block_size, Opts().kv_dtype);
    for (int32_t s = 0; s < batch; ++s) tokens[s] = 3 + (s * 7919) % (config.vocab_size - 3);
    for (int32_t i = 0; i < steps; ++i) {
      const ForwardBatch fb = batches.Append(tokens, i, LockstepBatch::Logits::kAll);
      absl::Status status = model->Forward(fb, cache, logits.data());
      CHECK(status.ok()) << status;
      for (int32_t s = 0; s < batch; ++s) {
        tokens[s] = ArgMax(absl::MakeConstSpan(logits).subspan(
            static_cast<size_t>(s) * config.vocab_size, config.vocab_size));
      }
    }
    generated += static_cast<int64_t>(batch) * steps;
  }
  state.counters["tokens/s"] = benchmark::Counter(generated, benchmark::Counter::kIsRate);
  state.counters["bytes_per_step"] = BytesPerStep(batch, steps);
}

// One prefill of range(0) tokens.
void BM_Prefill(benchmark::State& state) {
  std::unique_ptr<Ops> ops = NewCpuOps(static_cast<int>(state.range(1)));
  std::unique_ptr<LlamaModel> model = LoadModel(*ops);
  const int32_t n = static_cast<int32_t>(state.range(0));
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = 3 + (i * 7919) % (model->config().vocab_size - 3);
  for (auto _ : state) {
    SequenceRunner runner(*model, *ops, n, Opts().kv_dtype);
    auto logits = runner.Append(ids);
    CHECK(logits.ok()) << logits.status();
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(n) * state.iterations(), benchmark::Counter::kIsRate);
}

void Register() {
  const int steps = Opts().decode_steps, prompt = Opts().prompt_tokens;
  benchmark::RegisterBenchmark("BM_Decode", BM_Decode)
      ->ArgsProduct({{steps}, {1, 2}})
      ->ArgNames({"steps", "threads"})
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_DecodeBatch", BM_DecodeBatch)
      ->ArgsProduct({{16}, {steps}, {1, 2}})
      ->ArgNames({"batch", "steps", "threads"})
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_Prefill", BM_Prefill)
      ->ArgsProduct({{prompt}, {1, 2}})
      ->ArgNames({"tokens", "threads"})
      ->UseRealTime();
}

// Takes this benchmark's own flags out of argv (Google Benchmark rejects unknown ones).
bool ParseOwnFlags(int& argc, char** argv) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* key, std::string* out) {
      const std::string k = std::string("--") + key + "=";
      if (arg.rfind(k, 0) != 0) return false;
      *out = arg.substr(k.size());
      return true;
    };
    std::string v;
    if (value("model_dir", &v)) {
      Opts().model = v;
    } else if (value("decode_steps", &v)) {
      if (!absl::SimpleAtoi(v, &Opts().decode_steps) || Opts().decode_steps < 1) return false;
    } else if (value("prompt_tokens", &v)) {
      if (!absl::SimpleAtoi(v, &Opts().prompt_tokens) || Opts().prompt_tokens < 1) return false;
    } else if (value("kv_dtype", &v)) {
      if (v != "bf16" && v != "f32") return false;
      Opts().kv_dtype = v == "bf16" ? DType::kBF16 : DType::kF32;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  return true;
}

}  // namespace
}  // namespace kvfold

int main(int argc, char** argv) {
  if (!kvfold::ParseOwnFlags(argc, argv)) {
    std::fprintf(stderr, "kvfold_model_bench: bad --decode_steps, --prompt_tokens or --kv_dtype\n");
    return 2;
  }
  kvfold::Register();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
