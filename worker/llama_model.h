// The Llama family (Llama 2/3, Mistral, Qwen2) written once against the op interface.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/ops.h"
#include "worker/attention_plan.h"
#include "worker/forward_batch.h"
#include "worker/forward_observer.h"
#include "worker/kv_cache.h"
#include "worker/model_config.h"
#include "worker/step_graph_batch.h"
#include "worker/tensor_parallel.h"
#include "worker/weight_source.h"

namespace kvfold {

class LlamaModel {
 public:
  // Takes the weight source: on CPU the weights stay views into its memory (mapping). `plan`
  // folds the attention of some layers (validated against the config; no layers means all full).
  // Attention weights a layer's mode never reads are not loaded. `tp` makes this model one rank
  // of a tensor-parallel group (worker/tensor_parallel.h): it loads only its shard of the weights
  // (row shards as views, column shards of o_proj and down_proj copied; a quantized column shard
  // must be block-aligned) and every rank must call Forward with the same batches. Size 1 (the
  // default) is the unsharded model, bit for bit.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(std::unique_ptr<WeightSource> weights,
                                                          Ops& ops, AttentionPlan plan = {},
                                                          TensorParallel tp = {});
  ~LlamaModel();

  const ModelConfig& config() const { return weights_->config(); }
  const AttentionPlan& plan() const { return plan_; }
  const TensorParallel& tensor_parallel() const { return tp_; }
  // What each layer stores in the KV cache under the plan, for this rank's KV heads only; a cache
  // for this model has these.
  const std::vector<KvLayerShape>& kv_layer_shapes() const { return kv_shapes_; }

  // Runs the batch, writing K/V into `cache` (shaped by kv_layer_shapes()); `logits` is
  // [logits_rows.size(), vocab_size] F32 on the host (the whole vocabulary on every rank). Under
  // tensor parallelism a failed collective (a dead or silent rank) is returned as an error.
  absl::Status Forward(const ForwardBatch& batch, const KvCache& cache, float* logits);
  // Forward, leaving the logits where the ops put them (device memory on CUDA): a view of
  // [logits_rows.size(), vocab_size] F32, valid until the next Forward. Unimplemented under
  // tensor parallelism (the logits are gathered on the host there).
  absl::StatusOr<TensorView> ForwardToDeviceLogits(const ForwardBatch& batch, const KvCache& cache);

  // Step staging and step graphs (worker/step_graph_batch.h; a backend without them ignores
  // both). A graphed decode step runs eagerly the first time its shape (padded sequences, table
  // width) is seen, is captured the second time and replayed from then on; its logits are the
  // bits of the eager run of the same padded batch, and padding never changes a sequence's.
  void set_step_graphs(StepGraphOptions options) { graph_options_ = std::move(options); }
  const StepGraphOptions& step_graphs() const { return graph_options_; }

  // Sees every full layer's attention activations during Forward (calibration); null: none.
  // Under tensor parallelism it sees this rank's heads (q, k) and the reduced output.
  void set_observer(ForwardObserver* observer) { observer_ = observer; }

  // Runs at the start of every Forward, once the batch is validated; an error fails the Forward.
  // A tensor-parallel leader sends the step to its followers here (worker/step_transport.h).
  using BeforeForward = std::function<absl::Status(const ForwardBatch&, const KvCache&)>;
  void set_before_forward(BeforeForward hook) { before_forward_ = std::move(hook); }
  // Called by the executor while the engine is idle (tensor parallelism: a keepalive to the
  // followers); unset: nothing.
  void set_on_idle(std::function<absl::Status()> hook) { on_idle_ = std::move(hook); }
  absl::Status Idle() { return on_idle_ ? on_idle_() : absl::OkStatus(); }

 private:
  struct Layer;
  struct Workspace;
  LlamaModel(std::unique_ptr<WeightSource> weights, Ops& ops, AttentionPlan plan,
             TensorParallel tp);
  absl::Status LoadWeights();
  void EnsureWorkspace(int64_t num_tokens, int64_t num_logits);
  // Embedding, layers, then the logits rows gathered and normed into the workspace's `last`.
  absl::Status RunStep(const ForwardBatch& batch, const KvCache& cache);
  // The host arrays of `batch` that its op calls receive (Ops::StageStepInputs), and staging.
  void StageStep(const ForwardBatch& batch, int64_t region);
  // Forward of a decode step as a step graph; false (and nothing run) when the step has no graph
  // shape (too many sequences, tensor parallelism, an observer, graphs off).
  absl::StatusOr<bool> ForwardStepGraph(const ForwardBatch& batch, const KvCache& cache,
                                        float* logits);
  // x = the tokens' embeddings (each rank looks up its vocabulary rows, then an all-reduce).
  absl::Status Embed(absl::Span<const int32_t> token_ids, TensorView x);
  // logits = lm_head(last) over the whole vocabulary (each rank its rows, then an all-gather);
  // null `logits` (size 1 only): left in the workspace, not copied to the host.
  absl::Status Logits(const TensorView& last, float* logits);
  // Sums a row-parallel projection's partial output `o` over the ranks (nothing at size 1).
  absl::Status AllReduce(TensorView o);
  absl::Status ForwardLayer(int index, const ForwardBatch& batch, const KvCache& cache);
  // x += the layer's attention output, by its plan mode.
  absl::Status AttentionSublayer(int index, const ForwardBatch& batch, const KvCache& cache);
  // full: own Q/K/V over its own cache; kv_from: own Q over `kv`, the source layer's cache.
  absl::Status FullAttention(int index, const ForwardBatch& batch, const KvCacheLayer& kv,
                             bool write_kv);
  // share: the source layer's probabilities (kept or recomputed) over this layer's V.
  absl::Status SharedAttention(int index, const ForwardBatch& batch, const KvCache& cache);
  // cluster: scores once per representative KV head, applied to every member's V.
  absl::Status ClusteredAttention(int index, const ForwardBatch& batch, const KvCache& cache);
  // Whether this step keeps the probabilities of share sources (they fit the workspace budget).
  void KeepProbabilitiesIfTheyFit(const ForwardBatch& batch);
  std::optional<AttentionProbs> KeptProbabilities(int source, int64_t num_tokens,
                                                  AttentionProbs::Mode mode) const;
  static AttentionHeadMap HeadMap(const Layer& l);
  float AttentionScale() const;
  // drop: x += bias when the plan has one, else nothing.
  void DroppedAttention(int index, int64_t num_tokens);
  // x += MLP(norm(x)).
  absl::Status MlpSublayer(int index, int64_t num_tokens);

  std::unique_ptr<WeightSource> weights_;
  Ops& ops_;
  AttentionPlan plan_;  // as given (every rank's heads)
  TensorParallel tp_;
  // This rank's view: its head counts and intermediate size, the plan renumbered to its heads.
  ModelConfig local_;
  AttentionPlan local_plan_;
  ShardRange vocab_;  // this rank's rows of the embeddings and the LM head
  std::vector<KvLayerShape> kv_shapes_;
  std::vector<bool> share_source_;     // per layer: read by a share layer
  std::vector<Tensor> owned_weights_;  // device copies; empty on CPU
  std::vector<Layer> layers_;
  TensorView embedding_;
  TensorView lm_head_;
  Tensor final_norm_;
  Tensor rope_table_;
  std::unique_ptr<Workspace> ws_;
  ForwardObserver* observer_ = nullptr;
  BeforeForward before_forward_;
  std::function<absl::Status()> on_idle_;
  StepGraphOptions graph_options_;
  int32_t model_id_ = 0;  // this model's part of its step graph keys
  PaddedDecodeBatch padded_;
  std::set<int64_t> warm_graphs_;         // graph shapes run eagerly once (their caches are warm)
  std::set<int64_t> eager_shapes_;        // graph shapes whose capture failed: always eager
  std::vector<const void*> graph_cache_;  // per layer the K and V arrays the graphs write
};

}  // namespace kvfold
