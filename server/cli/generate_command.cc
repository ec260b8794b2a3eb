// `kvfold generate`: one prompt, one sequence, text streamed to stdout as it is produced, then
// prefill and decode speeds on stderr; or, with --prompts-file, many requests through the engine
// (batch_generate.cc).
#include <algorithm>
#include <chrono>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/cli/attention_plan_setup.h"
#include "server/cli/batch_generate.h"
#include "server/cli/command.h"
#include "server/cli/common_flags.h"
#include "server/cli/device_setup.h"
#include "server/cli/engine_flags.h"
#include "server/cli/model_setup.h"
#include "server/cli/tensor_parallel_flags.h"
#include "server/cli/tensor_parallel_launch.h"
#include "server/tokenizer/tokenizer.h"
#include "worker/llama_model.h"
#include "worker/sampler.h"
#include "worker/sequence_runner.h"

ABSL_FLAG(std::string, prompt, "", "Prompt text (empty: start from BOS alone)");
ABSL_FLAG(std::string, prompts_file, "",
          "Run every line of this file through the engine: one JSON object per line with "
          "\"prompt\" and optional \"max_tokens\", \"temperature\", \"seed\", \"stop\", "
          "\"top_k\", \"top_p\", \"min_p\", \"repetition_penalty\", \"frequency_penalty\", "
          "\"presence_penalty\", \"logit_bias\", \"logprobs\", \"top_logprobs\", "
          "\"stop_token_ids\", \"ignore_eos\"; prints one JSON object per line, in input order");
ABSL_FLAG(int, max_tokens, 256, "Most tokens to generate");
ABSL_FLAG(float, temperature, 0.0f, "Sampling temperature (0: greedy)");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed");
ABSL_FLAG(int, top_k, 0, "Keep the k most likely tokens (0: off)");
ABSL_FLAG(float, top_p, 1.0f,
          "Keep the smallest set of most likely tokens with this mass (1: off)");
ABSL_FLAG(float, min_p, 0.0f, "Drop tokens less likely than this times the top one (0: off)");
ABSL_FLAG(float, repetition_penalty, 1.0f,
          "Penalize tokens seen in the prompt or output (HF semantics; 1: off)");
namespace kvfold::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

using Loaded = LoadedModel;

bool IsEos(const ModelConfig& config, int32_t id) {
  return std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) !=
         config.eos_token_ids.end();
}

absl::Status Generate(Loaded& l, const std::string& prompt, int max_tokens,
                      const SamplingParams& sampling, DType kv_dtype) {
  const ModelConfig& config = l.model->config();
  absl::StatusOr<std::vector<int32_t>> ids = l.tokenizer->Encode(prompt, true);
  if (!ids.ok()) return ids.status();
  if (ids->empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");
  const int32_t prompt_len = static_cast<int32_t>(ids->size());
  if (prompt_len >= config.MaxContext()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the prompt has %d tokens; the model's context is %d", prompt_len, config.MaxContext()));
  }
  const int32_t capacity = std::min(config.MaxContext(), prompt_len + max_tokens);
  SequenceRunner runner(*l.model, *l.ops, capacity, kv_dtype);
  std::cerr << KvMemoryLine(*l.model, absl::GetFlag(FLAGS_attention_plan), kv_dtype,
                            /*num_blocks=*/0, SequenceRunner::kBlockSize, capacity)
            << "\n";
  IncrementalDetokenizer detok(*l.tokenizer, /*skip_special_tokens=*/true, *ids);
  std::cout << prompt << std::flush;

  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::vector<float>> logits = runner.Append(*ids);
  if (!logits.ok()) return logits.status();
  const Clock::time_point prefill_done = Clock::now();
  int generated = 0;
  std::vector<int32_t> outputs;
  while (generated < capacity - prompt_len) {
    const int32_t next = Sample(*logits, sampling, generated, {*ids, outputs});
    outputs.push_back(next);
    ++generated;
    if (IsEos(config, next)) break;
    absl::StatusOr<std::string> text = detok.Push(next);
    if (!text.ok()) return text.status();
    std::cout << *text << std::flush;
    if (runner.length() == capacity) break;
    logits = runner.Append(absl::MakeConstSpan(&next, 1));
    if (!logits.ok()) return logits.status();
  }
  absl::StatusOr<std::string> tail = detok.Finish();
  if (!tail.ok()) return tail.status();
  std::cout << *tail << std::endl;
  const Clock::time_point end = Clock::now();
  const int decode_steps = std::max(0, generated - 1);  // the first token came from prefill
  std::cerr << absl::StrFormat(
      "prefill: %d tokens in %.2f ms (%.1f tokens/s)\n"
      "decode: %d tokens in %.2f ms (%.1f tokens/s)\n",
      prompt_len, 1e3 * Seconds(prefill_done - start), prompt_len / Seconds(prefill_done - start),
      decode_steps, 1e3 * Seconds(end - prefill_done),
      decode_steps > 0 ? decode_steps / Seconds(end - prefill_done) : 0.0);
  return absl::OkStatus();
}

SamplingParams SamplingFromFlags() {
  SamplingParams p;
  p.temperature = absl::GetFlag(FLAGS_temperature);
  p.seed = absl::GetFlag(FLAGS_seed);
  p.top_k = absl::GetFlag(FLAGS_top_k);
  p.top_p = absl::GetFlag(FLAGS_top_p);
  p.min_p = absl::GetFlag(FLAGS_min_p);
  p.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  return p;
}

}  // namespace

int RunGenerate(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    std::cerr << "kvfold generate: unexpected argument '" << positional[0]
              << "' (the prompt goes in --prompt)\n";
    return 2;
  }
  const int max_tokens = absl::GetFlag(FLAGS_max_tokens);
  const SamplingParams sampling = SamplingFromFlags();
  if (max_tokens < 1) {
    std::cerr << "kvfold generate: --max-tokens must be >= 1\n";
    return 2;
  }
  if (absl::Status s = ValidateSamplingParams(sampling); !s.ok()) {
    std::cerr << "kvfold generate: " << s.message() << "\n";
    return 2;
  }
  if (!absl::GetFlag(FLAGS_prompt).empty() && !absl::GetFlag(FLAGS_prompts_file).empty()) {
    std::cerr << "kvfold generate: --prompt and --prompts-file exclude each other (each line of "
                 "the file carries its own prompt)\n";
    return 2;
  }
  absl::StatusOr<DType> kv_dtype = ParseKvCacheDtype(absl::GetFlag(FLAGS_kv_cache_dtype));
  if (!kv_dtype.ok()) {
    std::cerr << "kvfold generate: " << kv_dtype.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<Device> device = DeviceFromFlags();
  if (!device.ok()) {
    std::cerr << "kvfold generate: " << device.status().message() << "\n";
    return 2;
  }
  if (absl::Status s = CheckTensorParallelDevice(*device, absl::GetFlag(FLAGS_tensor_parallel_size),
                                                 absl::GetFlag(FLAGS_nnodes));
      !s.ok()) {
    std::cerr << "kvfold generate: " << s.message() << "\n";
    return 2;
  }
  std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty() && absl::GetFlag(FLAGS_tp_rank) == 0) path = DefaultModelPath();
  // Followers load the same model and plan with the same threads; they take the rest (batches,
  // KV cache geometry) from the leader's steps.
  absl::StatusOr<std::unique_ptr<TensorParallelGroup>> group = TensorParallelGroup::Join(
      "generate", path,
      {"--model=" + path, "--threads=" + std::to_string(absl::GetFlag(FLAGS_threads)),
       "--attention-plan=" + absl::GetFlag(FLAGS_attention_plan),
       "--device=" + absl::GetFlag(FLAGS_device)});
  if (!group.ok()) {
    std::cerr << "kvfold generate: " << group.status().message() << "\n";
    return 1;
  }
  const TensorParallel tp = (*group)->place();
  absl::StatusOr<Loaded> loaded =
      LoadModel(path, absl::GetFlag(FLAGS_threads), (*group)->PlaceModel(*device));
  if (!loaded.ok()) {
    std::cerr << "kvfold generate"
              << (tp.rank > 0 ? " (tensor-parallel rank " + std::to_string(tp.rank) + ")" : "")
              << ": " << loaded.status().message() << "\n";
    return 1;
  }
  if (tp.rank > 0) {
    const absl::Status s = (*group)->Follow(*loaded->model, *loaded->ops);
    if (s.ok()) return 0;
    std::cerr << "kvfold generate (tensor-parallel rank " << tp.rank << "): " << s.message()
              << "\n";
    return 1;
  }
  int64_t forwards = 0;  // for the collectives' per-step cost
  if (tp.size > 1) {
    StepSink& steps = (*group)->steps();
    loaded->model->set_before_forward(
        [&steps, &forwards](const ForwardBatch& batch, const KvCache& cache) {
          ++forwards;
          return steps.Send(batch, cache);
        });
  }
  const std::string prompts_file = absl::GetFlag(FLAGS_prompts_file);
  int code = 0;
  if (!prompts_file.empty()) {
    const LineDefaults defaults{max_tokens, sampling};
    code = RunPromptsFile(*loaded, prompts_file, defaults);
  } else if (absl::Status s =
                 Generate(*loaded, absl::GetFlag(FLAGS_prompt), max_tokens, sampling, *kv_dtype);
             !s.ok()) {
    std::cerr << "kvfold generate: " << s.message() << "\n";
    code = 1;
  }
  if (tp.size > 1) {
    // Where a tensor-parallel step's time goes: the leader's collectives (bench/RESULTS.md).
    std::cerr << (*group)->StatsLine() << "; " << forwards << " forward steps" << std::endl;
  }
  if (code == 0) {
    if (absl::Status s = (*group)->Finish(); !s.ok()) {
      std::cerr << "kvfold generate: " << s.message() << "\n";
      code = 1;
    }
  }
  return code;  // after a failure, the group's destructor ends the followers
}

}  // namespace kvfold::cli
