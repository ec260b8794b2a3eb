#include "server/cli/model_setup.h"

#include <utility>

#include "absl/flags/flag.h"
#include "server/cli/attention_plan_setup.h"
#include "server/cli/common_flags.h"
#include "worker/model_loader.h"
#include "worker/status_macros.h"

namespace kvfold::cli {

absl::StatusOr<LoadedModel> LoadModel(const std::string& path, int threads,
                                      ModelPlacement placement) {
  LoadedModel l;
  const Device device = l.device = placement.device;
  TensorParallel tp = placement.tp;
  l.cuda_ordinal = placement.cuda_ordinal;
  KVFOLD_ASSIGN_OR_RETURN(l.ops, CreateOps(device, threads, l.cuda_ordinal));
  if (placement.device_comm) {
    KVFOLD_ASSIGN_OR_RETURN(tp.comm, placement.device_comm(*l.ops));
  }
  int64_t free_before = 0;
  if (device == Device::kCuda) {
    KVFOLD_ASSIGN_OR_RETURN(const DeviceMemory m, QueryDeviceMemory(l.cuda_ordinal));
    free_before = m.free_bytes;
  }
  absl::StatusOr<std::unique_ptr<WeightSource>> weights = OpenWeights(path);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<AttentionPlan> plan = AttentionPlanFromFlags(**weights);
  if (!plan.ok()) return plan.status();
  absl::StatusOr<std::unique_ptr<LlamaModel>> model =
      LlamaModel::Load(*std::move(weights), *l.ops, *std::move(plan), tp);
  if (!model.ok()) return model.status();
  l.model = *std::move(model);
  if (device == Device::kCuda) {
    // One staged upload per step; decode steps replayed as CUDA graphs unless --enforce-eager.
    StepGraphOptions graphs;
    graphs.stage_inputs = true;
    graphs.graphs = !absl::GetFlag(FLAGS_enforce_eager);
    l.model->set_step_graphs(std::move(graphs));
    // Under tensor parallelism the leader samples the gathered logits on the host.
    if (tp.size == 1) {
      KVFOLD_ASSIGN_OR_RETURN(l.sampler, CreateDeviceSampler(device, l.cuda_ordinal, l.ops.get()));
    }
    KVFOLD_ASSIGN_OR_RETURN(const DeviceMemory m, QueryDeviceMemory(l.cuda_ordinal));
    l.weight_bytes = free_before - m.free_bytes;
  }
  if (tp.rank != 0) return l;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(path);
  if (!tok.ok()) return tok.status();
  l.tokenizer = *std::move(tok);
  return l;
}

}  // namespace kvfold::cli
