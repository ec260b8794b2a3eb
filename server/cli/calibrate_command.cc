// `kvfold calibrate`: one measuring pass of the unfolded model over calibration text
// (worker/calibration_pass.h), then the greedy plan search (worker/plan_search.h) scoring each
// candidate plan by its loss on that text and held-out perplexity on the rest of --data. Writes
// the plan and prints a table of the steps.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "kernels/cpu/cpu_ops.h"
#include "server/cli/command.h"
#include "server/cli/common_flags.h"
#include "server/cli/engine_flags.h"
#include "server/cli/text_data.h"
#include "server/tokenizer/tokenizer.h"
#include "worker/cache_config.h"
#include "worker/calibration_pass.h"
#include "worker/kv_cache.h"
#include "worker/model_loader.h"
#include "worker/perplexity.h"
#include "worker/plan_search.h"

ABSL_FLAG(std::string, out, "", "Where to write the calibrated attention plan (JSON)");
ABSL_FLAG(std::string, max_ppl_increase, "2%",
          "Largest held-out perplexity increase the plan may cost: a percentage (2%) or a "
          "fraction (0.02)");
ABSL_FLAG(std::string, target_kv_saving, "100%",
          "Stop once the plan saves this much KV memory per token (40% or 0.4)");
ABSL_FLAG(int, window, 256, "Tokens per calibration and held-out window, BOS included");
ABSL_FLAG(int, calibration_windows, 8,
          "Windows of the first 80% of --data measured and used to score candidates");
ABSL_FLAG(int, heldout_tokens, 2048, "Tokens of the last 20% of --data scored for perplexity");
ABSL_FLAG(int, candidates_per_kind, 2,
          "Candidates of each kind (drop, share, cluster) measured per search step");
ABSL_DECLARE_FLAG(std::string, data);

namespace kvfold::cli {
namespace {

// "2%" -> 0.02, "0.02" -> 0.02.
absl::StatusOr<double> ParseFraction(const std::string& flag, const std::string& flag_value) {
  absl::string_view text = flag_value;
  const bool percent = absl::ConsumeSuffix(&text, "%");
  double value = 0;
  if (!absl::SimpleAtod(text, &value) || value < 0 || (percent ? value > 100 : value > 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s: '%s' is not a percentage (2%%) or a fraction in [0, 1]", flag, flag_value));
  }
  return percent ? value / 100 : value;
}

struct Setup {
  std::string model_path;
  std::unique_ptr<Ops> ops;
  std::optional<int32_t> bos;
  std::vector<std::vector<int32_t>> calibration, heldout;
  DType kv_dtype = DType::kBF16;
  int window = 0;
};

// Mean NLL of `windows` under `plan`: the model is reopened with the plan (on the CPU its
// weights are views of the mapped file, so this costs little) over a cache shaped by it.
absl::StatusOr<double> PlanLoss(const Setup& s, const AttentionPlan& plan,
                                const std::vector<std::vector<int32_t>>& windows) {
  absl::StatusOr<std::unique_ptr<WeightSource>> weights = OpenWeights(s.model_path);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<std::unique_ptr<LlamaModel>> model =
      LlamaModel::Load(*std::move(weights), *s.ops, plan);
  if (!model.ok()) return model.status();
  std::unique_ptr<KvCache> cache = NewWindowCache(**model, *s.ops, s.window, s.kv_dtype);
  absl::StatusOr<PerplexityResult> result = EvaluatePerplexity(**model, *cache, windows);
  if (!result.ok()) return result.status();
  return result->MeanNll();
}

void PrintTable(const std::vector<PlanSearchStep>& steps, const PlanSearchOptions& options) {
  const double base_bytes = static_cast<double>(steps.front().kv_bytes_per_token);
  const double base_ppl = steps.front().heldout_ppl;
  std::cout << absl::StrFormat("%-4s %-40s %-8s %12s %8s %12s %10s %12s %8s\n", "step", "change",
                               "result", "KV B/token", "saved", "seqs fit", "calib NLL",
                               "held-out ppl", "ppl +%");
  for (size_t i = 0; i < steps.size(); ++i) {
    const PlanSearchStep& s = steps[i];
    std::cout << absl::StrFormat(
        "%-4d %-40s %-8s %12d %7.1f%% %12d %10.4f %12.4f %7.2f%%\n", i, s.change,
        i == 0       ? "start"
        : s.accepted ? "kept"
                     : "rejected",
        s.kv_bytes_per_token, 100.0 * (1.0 - s.kv_bytes_per_token / base_bytes), s.sequences_fit,
        s.calibration_loss, s.heldout_ppl, 100.0 * (s.heldout_ppl / base_ppl - 1.0));
  }
  std::cout << absl::StrFormat(
      "(seqs fit: sequences of %d tokens in %.1f MiB, the KV memory of 16 unfolded ones)\n",
      options.sequence_tokens, options.kv_budget_bytes / 1048576.0);
}

absl::Status Calibrate(const std::string& data_path, const std::string& out_path) {
  Setup s;
  s.model_path = absl::GetFlag(FLAGS_model);
  if (s.model_path.empty()) s.model_path = DefaultModelPath();
  s.window = absl::GetFlag(FLAGS_window);
  PlanSearchOptions options;
  absl::StatusOr<double> max_increase =
      ParseFraction("max-ppl-increase", absl::GetFlag(FLAGS_max_ppl_increase));
  if (!max_increase.ok()) return max_increase.status();
  absl::StatusOr<double> target =
      ParseFraction("target-kv-saving", absl::GetFlag(FLAGS_target_kv_saving));
  if (!target.ok()) return target.status();
  absl::StatusOr<DType> kv_dtype = ParseKvCacheDtype(absl::GetFlag(FLAGS_kv_cache_dtype));
  if (!kv_dtype.ok()) return kv_dtype.status();
  s.kv_dtype = *kv_dtype;
  absl::StatusOr<std::string> text = ReadDataText(data_path);
  if (!text.ok()) return text.status();

  absl::StatusOr<std::unique_ptr<Ops>> ops = CreateCpuOps(absl::GetFlag(FLAGS_threads));
  if (!ops.ok()) return ops.status();
  s.ops = *std::move(ops);
  absl::StatusOr<std::unique_ptr<WeightSource>> weights = OpenWeights(s.model_path);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<std::string> fingerprint = ModelFingerprint((*weights)->config(), **weights);
  if (!fingerprint.ok()) return fingerprint.status();
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(*std::move(weights), *s.ops);
  if (!model.ok()) return model.status();
  // A copy: the model is released before the search.
  const ModelConfig config = (*model)->config();
  // The pass keeps every layer's [heads, window, window] probabilities and compares layer pairs:
  // memory and time grow with the window's square.
  constexpr int kMaxWindow = 1024;
  const int max_window = std::min(kMaxWindow, config.MaxContext());
  if (s.window < 8 || s.window > max_window) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--window %d is outside [8, %d]", s.window, max_window));
  }
  if (absl::GetFlag(FLAGS_calibration_windows) < 1 ||
      absl::GetFlag(FLAGS_candidates_per_kind) < 1 || absl::GetFlag(FLAGS_heldout_tokens) < 1) {
    return absl::InvalidArgumentError(
        "--calibration-windows, --candidates-per-kind and --heldout-tokens must be >= 1");
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(s.model_path);
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<std::optional<int32_t>> bos = LeadingBos(**tokenizer);
  if (!bos.ok()) return bos.status();
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(*text, false);
  if (!ids.ok()) return ids.status();

  // The first 80% of the text calibrates, the rest is held out: disjoint by construction.
  const size_t cut = ids->size() * 4 / 5;
  const absl::Span<const int32_t> all(*ids);
  s.calibration = MakePerplexityWindows(all.first(cut), *bos, s.window);
  if (static_cast<int>(s.calibration.size()) > absl::GetFlag(FLAGS_calibration_windows)) {
    s.calibration.resize(absl::GetFlag(FLAGS_calibration_windows));
  }
  s.heldout =
      MakePerplexityWindows(all.subspan(cut), *bos, s.window, absl::GetFlag(FLAGS_heldout_tokens));
  // At least one whole calibration window, and held-out text worth a perplexity.
  constexpr size_t kMinHeldout = 32;
  if (s.calibration.empty() || static_cast<int>(s.calibration[0].size()) < s.window ||
      ids->size() - cut < kMinHeldout) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--data %s is %d tokens: too short for a calibration window of %d tokens (the first "
        "80%%) and %d held-out tokens (the rest)",
        data_path, ids->size(), s.window, kMinHeldout));
  }

  const bool tty = isatty(STDERR_FILENO);
  std::cerr << absl::StrFormat(
      "calibrate: %d calibration windows, %d held-out windows of %d tokens\n", s.calibration.size(),
      s.heldout.size(), s.window);
  absl::StatusOr<CalibrationStats> stats =
      GatherCalibrationStats(**model, *s.ops, s.calibration, {}, [tty](int done, int total) {
        std::fprintf(stderr, tty ? "\rmeasuring: window %d / %d" : "measuring: window %d / %d\n",
                     done, total);
        if (tty && done == total) std::fprintf(stderr, "\n");
      });
  if (!stats.ok()) return stats.status();
  model->reset();

  options.max_ppl_increase = *max_increase;
  options.target_kv_saving = *target;
  options.candidates_per_kind = absl::GetFlag(FLAGS_candidates_per_kind);
  options.kv_dtype = s.kv_dtype;
  options.sequence_tokens = 1024;
  options.kv_budget_bytes =
      int64_t{16} * options.sequence_tokens * KvCache::BytesPerToken(config, s.kv_dtype);
  int step = 0;
  absl::StatusOr<PlanSearchResult> result = SearchAttentionPlan(
      config, *stats, [&](const AttentionPlan& p) { return PlanLoss(s, p, s.calibration); },
      [&](const AttentionPlan& p) { return PlanLoss(s, p, s.heldout); }, options,
      [&](const PlanSearchStep& st) {
        std::cerr << absl::StrFormat("search step %d: %s -> %s, %d bytes/token, ppl %.4f\n", step++,
                                     st.change, st.accepted ? "kept" : "rejected",
                                     st.kv_bytes_per_token, st.heldout_ppl);
      });
  if (!result.ok()) return result.status();
  result->plan.model_fingerprint = *fingerprint;
  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  out << AttentionPlanToJson(result->plan);
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrFormat("cannot write --out %s", out_path));
  PrintTable(result->steps, options);
  std::cout << "plan written to " << out_path << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunCalibrate(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    std::cerr << "kvfold calibrate: unexpected argument '" << positional[0] << "'\n";
    return 2;
  }
  // Calibration's attention statistics read the model's activations on the host.
  if (absl::GetFlag(FLAGS_device) != "cpu") {
    std::cerr << "kvfold calibrate: --device " << absl::GetFlag(FLAGS_device)
              << ": calibrate runs on the CPU only (its attention statistics read activations on "
                 "the host); the plan it writes serves on any device\n";
    return 2;
  }
  const std::string data = absl::GetFlag(FLAGS_data), out = absl::GetFlag(FLAGS_out);
  if (data.empty() || out.empty()) {
    std::cerr << "kvfold calibrate: --data FILE and --out PLAN.json are required\n";
    return 2;
  }
  if (absl::Status s = Calibrate(data, out); !s.ok()) {
    std::cerr << "kvfold calibrate: " << s.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kvfold::cli
