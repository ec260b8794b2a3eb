// `kvfold eval`: perplexity of a model over a text file (worker/perplexity.h does the arithmetic),
// with throughput and KV bytes per token; human-readable lines, or one JSON line with --json for
// scripts (the calibration tool and benchmarks parse it).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
// WasPresentOnCommandLine: Abseil's own record of which flags the command line set.
#include "absl/flags/internal/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/cli/attention_plan_setup.h"
#include "server/cli/command.h"
#include "server/cli/common_flags.h"
#include "server/cli/device_setup.h"
#include "server/cli/engine_flags.h"
#include "server/cli/text_data.h"
#include "server/tokenizer/tokenizer.h"
#include "worker/cache_config.h"
#include "worker/llama_model.h"
#include "worker/model_loader.h"
#include "worker/perplexity.h"

ABSL_FLAG(std::string, data, "", "Text file to score (UTF-8)");
ABSL_FLAG(int, context, 0,
          "Tokens per window, BOS included (0: 512 or the model's context, whichever is smaller)");
ABSL_FLAG(bool, json, false, "Print one JSON object on one line instead of the readable report");
// --max-tokens (defined with `generate`, whose meaning it has there) caps the tokens scored here;
// its default only applies to generate, so eval reads it only when it is on the command line.
ABSL_DECLARE_FLAG(int, max_tokens);

namespace kvfold::cli {
namespace {

constexpr int kDefaultContext = 512;

// The model eval scores, folded by --attention-plan when given.
absl::StatusOr<std::unique_ptr<LlamaModel>> LoadEvalModel(const std::string& path, Ops& ops) {
  absl::StatusOr<std::unique_ptr<WeightSource>> weights = OpenWeights(path);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<AttentionPlan> plan = AttentionPlanFromFlags(**weights);
  if (!plan.ok()) return plan.status();
  return LlamaModel::Load(*std::move(weights), ops, *std::move(plan));
}

struct Report {
  std::string model, data;
  int context = 0;
  size_t windows = 0;
  bool bos = false;
  DType kv_dtype = DType::kF32;
  size_t kv_bytes_per_token = 0;
  PerplexityResult result;
};

void PrintReport(const Report& r, bool json) {
  const double tokens_per_second =
      r.result.seconds > 0 ? r.result.tokens_forwarded / r.result.seconds : 0.0;
  if (json) {
    nlohmann::json j = {{"model", r.model},
                        {"data", r.data},
                        {"context", r.context},
                        {"windows", r.windows},
                        {"bos", r.bos},
                        {"tokens_scored", r.result.tokens_scored},
                        {"tokens_forwarded", r.result.tokens_forwarded},
                        {"nll_sum", r.result.nll_sum},
                        {"mean_nll", r.result.MeanNll()},
                        {"perplexity", r.result.Perplexity()},
                        {"seconds", r.result.seconds},
                        {"tokens_per_second", tokens_per_second},
                        {"kv_dtype", std::string(DTypeName(r.kv_dtype))},
                        {"kv_bytes_per_token", r.kv_bytes_per_token}};
    std::cout << j.dump() << std::endl;
    return;
  }
  std::cout << absl::StrFormat(
      "model: %s\n"
      "data: %s (%d windows of up to %d tokens%s)\n"
      "tokens scored: %d\n"
      "mean NLL: %.5f nats/token\n"
      "perplexity: %.4f\n"
      "speed: %.1f tokens/s (%d tokens forwarded in %.2f s)\n"
      "KV bytes/token: %d (%s)\n",
      r.model, r.data, r.windows, r.context, r.bos ? ", BOS first" : "", r.result.tokens_scored,
      r.result.MeanNll(), r.result.Perplexity(), tokens_per_second, r.result.tokens_forwarded,
      r.result.seconds, r.kv_bytes_per_token, std::string(DTypeName(r.kv_dtype)));
}

absl::Status Eval(const std::string& model_path, const std::string& data_path, int context_flag,
                  int64_t max_scored, bool json) {
  absl::StatusOr<DType> kv_dtype = ParseKvCacheDtype(absl::GetFlag(FLAGS_kv_cache_dtype));
  if (!kv_dtype.ok()) return kv_dtype.status();
  absl::StatusOr<std::string> text = ReadDataText(data_path);
  if (!text.ok()) return text.status();

  absl::StatusOr<Device> device = DeviceFromFlags();
  if (!device.ok()) return device.status();
  absl::StatusOr<std::unique_ptr<Ops>> created = CreateOps(*device, absl::GetFlag(FLAGS_threads));
  if (!created.ok()) return created.status();  // a bad KVFOLD_ISA: an error, not a CHECK failure
  std::unique_ptr<Ops> ops = *std::move(created);
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LoadEvalModel(model_path, *ops);
  if (!model.ok()) return model.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(model_path);
  if (!tokenizer.ok()) return tokenizer.status();

  const int max_context = (*model)->config().MaxContext();
  const int context = context_flag == 0 ? std::min(kDefaultContext, max_context) : context_flag;
  if (context < 2 || context > max_context) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--context %d is outside [2, %d] (the model's context)", context, max_context));
  }
  absl::StatusOr<std::optional<int32_t>> bos = LeadingBos(**tokenizer);
  if (!bos.ok()) return bos.status();
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(*text, false);
  if (!ids.ok()) return ids.status();
  const std::vector<std::vector<int32_t>> windows =
      MakePerplexityWindows(*ids, *bos, context, max_scored);
  if (windows.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--data %s is %d tokens long: too short to score any token", data_path, ids->size()));
  }

  std::unique_ptr<KvCache> cache = NewWindowCache(**model, *ops, context, *kv_dtype);
  PerplexityOptions options;
  if (isatty(STDERR_FILENO)) {
    options.progress = [](int64_t done, int64_t total) {
      std::fprintf(stderr, "\reval: %lld / %lld tokens", static_cast<long long>(done),
                   static_cast<long long>(total));
      if (done == total) std::fprintf(stderr, "\n");
    };
  }
  absl::StatusOr<PerplexityResult> result = EvaluatePerplexity(**model, *cache, windows, options);
  if (!result.ok()) return result.status();
  if (!std::isfinite(result->nll_sum)) {
    return absl::InternalError("the model's logits gave a non-finite log-likelihood");
  }
  Report report{model_path,
                data_path,
                context,
                windows.size(),
                bos->has_value(),
                *kv_dtype,
                CacheBytesPerToken(*cache),
                *std::move(result)};
  PrintReport(report, json);
  return absl::OkStatus();
}

}  // namespace

int RunEval(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    std::cerr << "kvfold eval: unexpected argument '" << positional[0]
              << "' (the text file goes in --data)\n";
    return 2;
  }
  const std::string data = absl::GetFlag(FLAGS_data);
  if (data.empty()) {
    std::cerr << "kvfold eval: --data FILE is required\n";
    return 2;
  }
  const int context = absl::GetFlag(FLAGS_context);
  if (context < 0) {
    std::cerr << "kvfold eval: --context must be >= 0\n";
    return 2;
  }
  int64_t max_scored = 0;
  if (absl::flags_internal::WasPresentOnCommandLine("max_tokens")) {
    max_scored = absl::GetFlag(FLAGS_max_tokens);
    if (max_scored < 1) {
      std::cerr << "kvfold eval: --max-tokens must be >= 1\n";
      return 2;
    }
  }
  std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) model = DefaultModelPath();
  if (absl::Status s = Eval(model, data, context, max_scored, absl::GetFlag(FLAGS_json)); !s.ok()) {
    std::cerr << "kvfold eval: " << s.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kvfold::cli
