#include "server/cli/model_setup.h"

#include <utility>

#include "kernels/cpu/cpu_ops.h"
#include "server/cli/attention_plan_setup.h"
#include "worker/model_loader.h"

namespace kvfold::cli {

absl::StatusOr<LoadedModel> LoadModel(const std::string& path, int threads, TensorParallel tp) {
  LoadedModel l;
  absl::StatusOr<std::unique_ptr<Ops>> ops = CreateCpuOps(threads);  // a bad KVFOLD_ISA: error
  if (!ops.ok()) return ops.status();
  l.ops = *std::move(ops);
  absl::StatusOr<std::unique_ptr<WeightSource>> weights = OpenWeights(path);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<AttentionPlan> plan = AttentionPlanFromFlags(**weights);
  if (!plan.ok()) return plan.status();
  absl::StatusOr<std::unique_ptr<LlamaModel>> model =
      LlamaModel::Load(*std::move(weights), *l.ops, *std::move(plan), tp);
  if (!model.ok()) return model.status();
  l.model = *std::move(model);
  if (tp.rank != 0) return l;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(path);
  if (!tok.ok()) return tok.status();
  l.tokenizer = *std::move(tok);
  return l;
}

}  // namespace kvfold::cli
