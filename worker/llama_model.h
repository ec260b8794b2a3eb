// The Llama family (Llama 2/3, Mistral, Qwen2) written once against the op interface.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/ops.h"
#include "worker/kv_cache.h"
#include "worker/model_config.h"
#include "worker/weight_source.h"

namespace kvfold {

// One forward step over a flat batch of tokens from several sequences.
struct ForwardBatch {
  absl::Span<const int32_t> token_ids;  // num_tokens
  absl::Span<const int32_t> positions;  // num_tokens
  AttentionBatch attention;
  // Token rows whose logits are wanted, e.g. each sequence's last row (or every row, for goldens).
  absl::Span<const int32_t> logits_rows;
};

class LlamaModel {
 public:
  // Takes the weight source: on CPU the weights stay views into its memory (mapping).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(std::unique_ptr<WeightSource> weights,
                                                          Ops& ops);
  ~LlamaModel();

  const ModelConfig& config() const { return weights_->config(); }

  // Runs the batch, writing K/V into `cache`; `logits` is [logits_rows.size(), vocab_size] F32
  // on the host.
  absl::Status Forward(const ForwardBatch& batch, const KvCache& cache, float* logits);

 private:
  struct Layer;
  struct Workspace;
  LlamaModel(std::unique_ptr<WeightSource> weights, Ops& ops);
  absl::Status LoadWeights();
  void EnsureWorkspace(int64_t num_tokens, int64_t num_logits);
  void ForwardLayer(int index, const ForwardBatch& batch, const KvCache& cache);

  std::unique_ptr<WeightSource> weights_;
  Ops& ops_;
  std::vector<Tensor> owned_weights_;  // device copies; empty on CPU
  std::vector<Layer> layers_;
  TensorView embedding_;
  TensorView lm_head_;
  Tensor final_norm_;
  Tensor rope_table_;
  std::unique_ptr<Workspace> ws_;
};

}  // namespace kvfold
