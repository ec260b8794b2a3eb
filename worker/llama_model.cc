#include "worker/llama_model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cpu/quant.h"
#include "worker/device_weights.h"
#include "worker/rope.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

// Which query, K and V head each output head of a share or cluster layer reads (AttentionHeadMap).
struct FoldedHeads {
  std::vector<int32_t> score_head, k_head, v_head;
  int32_t stored_k_heads = 0;  // cluster: K heads kept (the representatives)
};

}  // namespace

// A layer's weights; those its plan mode never reads stay empty (drop: every attention weight;
// kv_from: K and V projections; share: Q and K projections).
struct LlamaModel::Layer {
  Tensor input_norm, post_attention_norm;
  TensorView wq, wk, wv, wo, w_gate, w_up, w_down;
  Tensor bq, bk, bv, bo, b_gate, b_up, b_down;  // empty unless the checkpoint has biases
  Tensor drop_bias;                             // drop with a calibrated bias: [1, hidden]
  FoldedHeads heads;                            // share and cluster
};

// Activations for one step, grown to the largest batch seen.
struct LlamaModel::Workspace {
  int64_t num_tokens = 0, num_logits = 0;
  Tensor x, h, q, k, v, attn, o, gate, up, last, logits;
  std::vector<int32_t> zero_rows;  // num_tokens zeros: GatherRows broadcasts a [1, d] row
  // Tensor parallelism: `embed` row 0 stays zero, rows 1.. hold this rank's looked-up tokens;
  // host buffers for the collectives.
  Tensor embed;
  std::vector<int32_t> embed_ids, embed_rows;
  std::vector<float> host, gather_send, gather_recv;
  // Per layer that share layers read: its queries after RoPE, kept for the whole step, and (when
  // the step's probabilities fit kMaxProbFloats) the attention probabilities it computed.
  std::vector<Tensor> source_q, source_probs;
  int64_t probs_capacity = 0;  // floats in each source_probs tensor
  int32_t probs_cols = 0;      // this step's longest context; 0: probabilities not kept
};

namespace {
// Kept probabilities cost num_tokens x num_heads x context floats per source layer; past this a
// share layer recomputes them from the source's queries and keys (the same bits).
constexpr int64_t kMaxProbFloats = int64_t{16} << 20;
}  // namespace

namespace {

const TensorView* OrNull(const Tensor& t) { return t.view().data ? &t.view() : nullptr; }

std::string LayerName(int i, std::string_view leaf) {
  return absl::StrCat("model.layers.", i, ".", std::string(leaf));
}

}  // namespace

LlamaModel::LlamaModel(std::unique_ptr<WeightSource> weights, Ops& ops, AttentionPlan plan,
                       TensorParallel tp)
    : weights_(std::move(weights)),
      ops_(ops),
      plan_(std::move(plan)),
      tp_(tp),
      local_(ShardConfig(weights_->config(), tp_)),
      local_plan_(ShardPlan(plan_, weights_->config(), tp_)),
      vocab_(VocabShard(weights_->config(), tp_)),
      ws_(std::make_unique<Workspace>()) {
  static std::atomic<int32_t> next_model_id{0};
  model_id_ = next_model_id++ % (1 << 20);  // step graph keys: one Ops may serve several models
}

LlamaModel::~LlamaModel() = default;

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(std::unique_ptr<WeightSource> weights,
                                                             Ops& ops, AttentionPlan plan,
                                                             TensorParallel tp) {
  if (weights == nullptr) return absl::InvalidArgumentError("no weights");
  const ModelConfig& config = weights->config();
  KVFOLD_RETURN_IF_ERROR(CheckTensorParallel(config, tp));
  if (plan.layers.empty()) plan.layers = FullAttentionPlan(config).layers;
  const std::string source = plan.id.empty() ? "attention plan" : "attention plan " + plan.id;
  KVFOLD_RETURN_IF_ERROR(ValidateAttentionPlan(plan, config, tp.size, source));
  std::unique_ptr<LlamaModel> model(new LlamaModel(std::move(weights), ops, std::move(plan), tp));
  // Each rank computes its own heads: every per-head structure below is the rank's.
  KVFOLD_RETURN_IF_ERROR(ValidateAttentionPlan(model->local_plan_, model->local_, 1, source));
  model->kv_shapes_ = KvLayerShapes(model->local_, model->local_plan_);
  model->share_source_.assign(model->plan_.layers.size(), false);
  for (const LayerPlan& l : model->local_plan_.layers) {
    if (l.mode == AttentionMode::kShare) model->share_source_[l.source] = true;
  }
  if (absl::Status s = model->LoadWeights(); !s.ok()) return s;
  return model;
}

namespace {

// Weights live where the backend computes: views into the mapping on CPU, device copies
// elsewhere. Norms and biases are small and always converted to F32.
class WeightPlacer {
 public:
  WeightPlacer(const WeightSource& ckpt, Ops& ops, std::vector<Tensor>& owned)
      : ckpt_(ckpt), ops_(ops), owned_(owned) {}

  absl::StatusOr<TensorView> Matrix(const std::string& name, int64_t rows, int64_t cols) {
    absl::StatusOr<TensorView> host = ckpt_.Get(name, rows, cols);
    if (!host.ok() || ops_.device() == Device::kCpu) return host;
    return Upload(*host);
  }

  absl::StatusOr<Tensor> Vector(const std::string& name, int64_t n) {
    absl::StatusOr<TensorView> host = ckpt_.Get(name, 1, n);
    if (!host.ok()) return host.status();
    std::vector<float> values(n);
    cpu::DequantizeRow(host->data, host->dtype, n, values.data());  // any stored dtype
    KVFOLD_ASSIGN_OR_RETURN(Tensor t, ops_.TryAllocate(DType::kF32, 1, n));
    ops_.CopyFromHost(values.data(), t.view());
    return t;
  }

  // Rows `shard` of the matrix: a view into the mapping on CPU (a row shard is contiguous).
  absl::StatusOr<TensorView> Rows(const std::string& name, int64_t rows, int64_t cols,
                                  ShardRange shard) {
    absl::StatusOr<TensorView> part = ckpt_.GetRows(name, rows, cols, shard.begin, shard.count);
    if (!part.ok() || ops_.device() == Device::kCpu || shard.count == 0) return part;
    KVFOLD_ASSIGN_OR_RETURN(Tensor t, ops_.TryAllocate(part->dtype, part->rows, cols));
    ops_.CopyFromHost(part->data, t.view());
    owned_.push_back(std::move(t));
    return owned_.back().view();
  }

  // Columns `shard` of the matrix (the input dimension of a row-parallel projection), copied:
  // only those bytes of each row are read. Quantized rows split only at block boundaries.
  absl::StatusOr<TensorView> Columns(const std::string& name, int64_t rows, int64_t cols,
                                     ShardRange shard) {
    if (shard.begin == 0 && shard.count == cols) return Matrix(name, rows, cols);
    absl::StatusOr<TensorView> host = ckpt_.Get(name, rows, cols);
    if (!host.ok()) return host;
    if (IsQuantized(host->dtype) &&
        (shard.begin % kQuantBlock != 0 || shard.count % kQuantBlock != 0)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %s is %s, stored in blocks of %d columns; its tensor-parallel shard, columns "
          "[%d, %d), would split a block (choose a tensor-parallel size that keeps each rank's "
          "columns a multiple of %d)",
          ckpt_.location(), name, std::string(DTypeName(host->dtype)), kQuantBlock, shard.begin,
          shard.begin + shard.count, kQuantBlock));
    }
    const size_t skip = RowBytes(host->dtype, shard.begin);
    const size_t keep = RowBytes(host->dtype, shard.count);
    std::vector<char> bytes(static_cast<size_t>(rows) * keep);
    for (int64_t r = 0; r < rows; ++r) {
      const char* src = static_cast<const char*>(host->data) + r * host->row_bytes() + skip;
      std::copy(src, src + keep, bytes.data() + r * keep);
    }
    if (ops_.device() == Device::kCpu) {
      KVFOLD_ASSIGN_OR_RETURN(Tensor t, ops_.TryAllocate(host->dtype, rows, shard.count));
      ops_.CopyFromHost(bytes.data(), t.view());
      owned_.push_back(std::move(t));
      return owned_.back().view();
    }
    return Upload({bytes.data(), host->dtype, rows, shard.count});  // device: as BF16 if quantized
  }

  // Entries `shard` of an optional vector (an empty tensor when absent); `shard` is one of n /
  // shard.count equal parts.
  absl::StatusOr<Tensor> OptionalVectorShard(bool present, const std::string& name, int64_t n,
                                             ShardRange shard) {
    if (shard.begin == 0 && shard.count == n) return OptionalVector(present, name, n);
    const int32_t block = static_cast<int32_t>(shard.begin / shard.count);
    return OptionalVectorBlocks(present, name, n, shard.count, {block});
  }

  // Rows [b * block_rows, (b + 1) * block_rows) for each b of `blocks`, in that order, as one
  // owned matrix (cluster layers keep only their representatives' K projection).
  absl::StatusOr<TensorView> RowBlocks(const std::string& name, int64_t rows, int64_t cols,
                                       int64_t block_rows, absl::Span<const int32_t> blocks) {
    std::vector<char> bytes;
    DType dtype = DType::kF32;
    for (int32_t b : blocks) {
      absl::StatusOr<TensorView> block =
          ckpt_.GetRows(name, rows, cols, b * block_rows, block_rows);
      if (!block.ok()) return block.status();
      const char* src = static_cast<const char*>(block->data);
      bytes.insert(bytes.end(), src, src + block->nbytes());
      dtype = block->dtype;
    }
    if (ops_.device() == Device::kCpu) {
      KVFOLD_ASSIGN_OR_RETURN(
          Tensor t,
          ops_.TryAllocate(dtype, block_rows * static_cast<int64_t>(blocks.size()), cols));
      ops_.CopyFromHost(bytes.data(), t.view());
      owned_.push_back(std::move(t));
      return owned_.back().view();
    }
    return Upload({bytes.data(), dtype, block_rows * static_cast<int64_t>(blocks.size()), cols});
  }

  // Entries [b * block, (b + 1) * block) of a vector for each b of `blocks` (an empty tensor when
  // absent).
  absl::StatusOr<Tensor> OptionalVectorBlocks(bool present, const std::string& name, int64_t n,
                                              int64_t block, absl::Span<const int32_t> blocks) {
    if (!present) return Tensor();
    absl::StatusOr<TensorView> host = ckpt_.Get(name, 1, n);
    if (!host.ok()) return host.status();
    std::vector<float> values(n), picked;
    cpu::DequantizeRow(host->data, host->dtype, n, values.data());
    for (int32_t b : blocks) {
      picked.insert(picked.end(), values.begin() + b * block, values.begin() + (b + 1) * block);
    }
    KVFOLD_ASSIGN_OR_RETURN(Tensor t,
                            ops_.TryAllocate(DType::kF32, 1, static_cast<int64_t>(picked.size())));
    ops_.CopyFromHost(picked.data(), t.view());
    return t;
  }

  // An absent optional bias is an empty tensor.
  absl::StatusOr<Tensor> OptionalVector(bool present, const std::string& name, int64_t n) {
    if (!present) return Tensor();
    return Vector(name, n);
  }

 private:
  // A device copy of `host` in DeviceWeightDType (quantized blocks become BF16, device_weights.h).
  absl::StatusOr<TensorView> Upload(const TensorView& host) {
    KVFOLD_ASSIGN_OR_RETURN(Tensor t,
                            ops_.TryAllocate(DeviceWeightDType(host.dtype), host.rows, host.cols));
    if (IsQuantized(host.dtype)) {
      const std::vector<uint16_t> bf16 = ConvertToBf16(host);
      ops_.CopyFromHost(bf16.data(), t.view());
    } else {
      ops_.CopyFromHost(host.data, t.view());
    }
    owned_.push_back(std::move(t));
    return owned_.back().view();
  }

  const WeightSource& ckpt_;
  Ops& ops_;
  std::vector<Tensor>& owned_;
};

}  // namespace

namespace {

// The head map of a share or cluster layer (ATTENTION.md), as FoldedPagedAttention takes it, per
// output head h of KV group g = h / group:
//   share:   scores of the source's query head a = align[h] against the source's K head a / group,
//            applied to this layer's V head g;
//   cluster: scores of query head r * group + (h % group) of g's representative KV head r against
//            the stored K of r (K is compacted to the representatives, in increasing order),
//            applied to V head g.
// Returns the representatives (cluster) or nothing (share).
std::vector<int32_t> BuildFoldedHeadMap(const ModelConfig& c, const LayerPlan& p,
                                        FoldedHeads& heads) {
  const int group = c.num_heads / c.num_kv_heads;
  std::vector<int32_t> reps;
  if (p.mode == AttentionMode::kCluster) {
    for (int g = 0; g < c.num_kv_heads; ++g) {
      if (p.static_map[g] == g) reps.push_back(g);
    }
  }
  heads.score_head.resize(c.num_heads);
  heads.k_head.resize(c.num_heads);
  heads.v_head.resize(c.num_heads);
  for (int h = 0; h < c.num_heads; ++h) {
    const int g = h / group;
    heads.v_head[h] = g;
    if (p.mode == AttentionMode::kShare) {
      const int a = p.align.empty() ? h : p.align[h];
      heads.score_head[h] = a;
      heads.k_head[h] = a / group;
    } else {
      const int r = p.static_map[g];
      heads.score_head[h] = r * group + h % group;
      heads.k_head[h] =
          static_cast<int32_t>(std::lower_bound(reps.begin(), reps.end(), r) - reps.begin());
    }
  }
  heads.stored_k_heads = static_cast<int32_t>(reps.size());
  return reps;
}

}  // namespace

absl::Status LlamaModel::LoadWeights() {
  const ModelConfig& c = config();
  WeightPlacer w(*weights_, ops_, owned_weights_);
  const int64_t d = c.hidden_size, ffn = c.intermediate_size, hd = c.head_dim;
  const int64_t q_dim = static_cast<int64_t>(c.num_heads) * hd;
  const int64_t kv_dim = static_cast<int64_t>(c.num_kv_heads) * hd;
  // This rank's slices (the whole dimension at size 1): heads as rows of Q/K/V and columns of O,
  // MLP columns as rows of gate/up and columns of down, vocabulary rows.
  const ShardRange qh = QueryHeadShard(c, tp_), kvh = KvHeadShard(c, tp_);
  const ShardRange q_part{qh.begin * hd, qh.count * hd}, kv_part{kvh.begin * hd, kvh.count * hd};
  const ShardRange ffn_part = IntermediateShard(c, tp_);
  // Biases of row-parallel projections are added once, by rank 0, before the all-reduce.
  const bool adds_reduced_bias = tp_.rank == 0;

  KVFOLD_ASSIGN_OR_RETURN(embedding_, w.Rows("model.embed_tokens.weight", c.vocab_size, d, vocab_));
  if (weights_->Has("lm_head.weight")) {
    KVFOLD_ASSIGN_OR_RETURN(lm_head_, w.Rows("lm_head.weight", c.vocab_size, d, vocab_));
  } else if (c.tie_word_embeddings) {
    lm_head_ = embedding_;  // the same vocabulary rows
  } else {
    return absl::NotFoundError(
        absl::StrCat(weights_->location(), ": no lm_head.weight and embeddings are not tied"));
  }
  KVFOLD_ASSIGN_OR_RETURN(final_norm_, w.Vector("model.norm.weight", d));

  layers_.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    Layer& l = layers_[i];
    const LayerPlan& p = local_plan_.layers[i];
    auto name = [i](std::string_view leaf) { return LayerName(i, leaf); };
    const bool reads_q = p.mode == AttentionMode::kFull || p.mode == AttentionMode::kKvFrom ||
                         p.mode == AttentionMode::kCluster;
    const bool writes_v = p.mode == AttentionMode::kFull || p.mode == AttentionMode::kShare ||
                          p.mode == AttentionMode::kCluster;
    if (p.mode != AttentionMode::kDrop) {
      KVFOLD_ASSIGN_OR_RETURN(l.input_norm, w.Vector(name("input_layernorm.weight"), d));
      KVFOLD_ASSIGN_OR_RETURN(l.wo, w.Columns(name("self_attn.o_proj.weight"), d, q_dim, q_part));
      KVFOLD_ASSIGN_OR_RETURN(
          l.bo, w.OptionalVector(c.o_bias && adds_reduced_bias, name("self_attn.o_proj.bias"), d));
    }
    if (reads_q) {
      KVFOLD_ASSIGN_OR_RETURN(l.wq, w.Rows(name("self_attn.q_proj.weight"), q_dim, d, q_part));
      KVFOLD_ASSIGN_OR_RETURN(
          l.bq, w.OptionalVectorShard(c.qkv_bias, name("self_attn.q_proj.bias"), q_dim, q_part));
    }
    if (p.mode == AttentionMode::kFull) {
      KVFOLD_ASSIGN_OR_RETURN(l.wk, w.Rows(name("self_attn.k_proj.weight"), kv_dim, d, kv_part));
      KVFOLD_ASSIGN_OR_RETURN(
          l.bk, w.OptionalVectorShard(c.qkv_bias, name("self_attn.k_proj.bias"), kv_dim, kv_part));
    }
    if (writes_v) {
      KVFOLD_ASSIGN_OR_RETURN(l.wv, w.Rows(name("self_attn.v_proj.weight"), kv_dim, d, kv_part));
      KVFOLD_ASSIGN_OR_RETURN(
          l.bv, w.OptionalVectorShard(c.qkv_bias, name("self_attn.v_proj.bias"), kv_dim, kv_part));
    }
    if (p.mode == AttentionMode::kShare || p.mode == AttentionMode::kCluster) {
      std::vector<int32_t> reps = BuildFoldedHeadMap(local_, p, l.heads);
      if (p.mode == AttentionMode::kCluster) {
        for (int32_t& r : reps) r += static_cast<int32_t>(kvh.begin);  // the checkpoint's heads
        KVFOLD_ASSIGN_OR_RETURN(l.wk,
                                w.RowBlocks(name("self_attn.k_proj.weight"), kv_dim, d, hd, reps));
        KVFOLD_ASSIGN_OR_RETURN(
            l.bk,
            w.OptionalVectorBlocks(c.qkv_bias, name("self_attn.k_proj.bias"), kv_dim, hd, reps));
      }
    }
    if (p.mode == AttentionMode::kDrop && !p.bias.empty()) {
      // The residual stream is replicated: every rank adds the whole bias to its own copy.
      KVFOLD_ASSIGN_OR_RETURN(l.drop_bias, ops_.TryAllocate(DType::kF32, 1, d));
      ops_.CopyFromHost(p.bias.data(), l.drop_bias.view());
    }
    KVFOLD_ASSIGN_OR_RETURN(l.post_attention_norm,
                            w.Vector(name("post_attention_layernorm.weight"), d));
    KVFOLD_ASSIGN_OR_RETURN(l.w_gate, w.Rows(name("mlp.gate_proj.weight"), ffn, d, ffn_part));
    KVFOLD_ASSIGN_OR_RETURN(l.w_up, w.Rows(name("mlp.up_proj.weight"), ffn, d, ffn_part));
    KVFOLD_ASSIGN_OR_RETURN(l.w_down, w.Columns(name("mlp.down_proj.weight"), d, ffn, ffn_part));
    KVFOLD_ASSIGN_OR_RETURN(
        l.b_gate, w.OptionalVectorShard(c.mlp_bias, name("mlp.gate_proj.bias"), ffn, ffn_part));
    KVFOLD_ASSIGN_OR_RETURN(
        l.b_up, w.OptionalVectorShard(c.mlp_bias, name("mlp.up_proj.bias"), ffn, ffn_part));
    KVFOLD_ASSIGN_OR_RETURN(
        l.b_down, w.OptionalVector(c.mlp_bias && adds_reduced_bias, name("mlp.down_proj.bias"), d));
  }

  const std::vector<float> table = RopeCosSinTable(c, c.max_position_embeddings);
  KVFOLD_ASSIGN_OR_RETURN(rope_table_,
                          ops_.TryAllocate(DType::kF32, c.max_position_embeddings, c.head_dim));
  ops_.CopyFromHost(table.data(), rope_table_.view());
  return absl::OkStatus();
}

void LlamaModel::EnsureWorkspace(int64_t num_tokens, int64_t num_logits) {
  Workspace& w = *ws_;
  const ModelConfig& c = local_;  // this rank's heads and MLP columns
  if ((num_tokens > w.num_tokens || num_logits > w.num_logits) && !warm_graphs_.empty()) {
    // Step graphs read the buffers about to be replaced.
    ops_.DropStepGraphs();
    warm_graphs_.clear();
  }
  if (num_tokens > w.num_tokens) {
    const int64_t q_dim = static_cast<int64_t>(c.num_heads) * c.head_dim;
    const int64_t kv_dim = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
    w.x = ops_.Allocate(DType::kF32, num_tokens, c.hidden_size);
    w.h = ops_.Allocate(DType::kF32, num_tokens, c.hidden_size);
    w.o = ops_.Allocate(DType::kF32, num_tokens, c.hidden_size);
    w.q = ops_.Allocate(DType::kF32, num_tokens, q_dim);
    w.attn = ops_.Allocate(DType::kF32, num_tokens, q_dim);
    w.k = ops_.Allocate(DType::kF32, num_tokens, kv_dim);
    w.v = ops_.Allocate(DType::kF32, num_tokens, kv_dim);
    w.gate = ops_.Allocate(DType::kF32, num_tokens, c.intermediate_size);
    w.up = ops_.Allocate(DType::kF32, num_tokens, c.intermediate_size);
    w.zero_rows.assign(num_tokens, 0);
    if (tp_.size > 1) w.embed = ops_.Allocate(DType::kF32, num_tokens + 1, c.hidden_size);
    w.source_q.resize(c.num_layers);
    for (int i = 0; i < c.num_layers; ++i) {
      if (share_source_[i]) w.source_q[i] = ops_.Allocate(DType::kF32, num_tokens, q_dim);
    }
    w.num_tokens = num_tokens;
  }
  if (num_logits > w.num_logits) {
    w.last = ops_.Allocate(DType::kF32, num_logits, c.hidden_size);
    if (vocab_.count > 0) w.logits = ops_.Allocate(DType::kF32, num_logits, vocab_.count);
    w.num_logits = num_logits;
  }
}

namespace {

absl::Status ValidateBatch(const ModelConfig& c, const ForwardBatch& b, const KvCache& cache,
                           absl::Span<const KvLayerShape> kv_shapes) {
  const int64_t n = static_cast<int64_t>(b.token_ids.size());
  const AttentionBatch& a = b.attention;
  if (cache.shapes() != std::vector<KvLayerShape>(kv_shapes.begin(), kv_shapes.end())) {
    return absl::InvalidArgumentError(
        "the KV cache is not shaped for this model's attention plan (build it from "
        "kv_layer_shapes())");
  }
  if (n == 0) return absl::InvalidArgumentError("empty batch");
  if (static_cast<int64_t>(b.positions.size()) != n ||
      static_cast<int64_t>(a.slot_mapping.size()) != n) {
    return absl::InvalidArgumentError("positions and slot mapping must have one entry per token");
  }
  if (a.query_start.size() != a.context_len.size() + 1 || a.query_start.front() != 0 ||
      a.query_start.back() != n ||
      a.block_tables.size() != a.context_len.size() * static_cast<size_t>(a.max_blocks_per_seq)) {
    return absl::InvalidArgumentError("inconsistent attention batch layout");
  }
  for (int32_t id : b.token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("token id %d outside [0, %d)", id, c.vocab_size));
    }
  }
  for (int32_t p : b.positions) {
    if (p < 0 || p >= c.MaxContext()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("position %d outside the model's context of %d", p, c.MaxContext()));
    }
  }
  for (int64_t slot : a.slot_mapping) {
    if (slot < 0 || slot >= static_cast<int64_t>(cache.num_blocks()) * cache.block_size()) {
      return absl::InvalidArgumentError(absl::StrFormat("cache slot %d out of range", slot));
    }
  }
  for (int32_t r : b.logits_rows) {
    if (r < 0 || r >= n) return absl::InvalidArgumentError("logits row out of range");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LlamaModel::Forward(const ForwardBatch& batch, const KvCache& cache, float* logits) {
  KVFOLD_RETURN_IF_ERROR(ValidateBatch(config(), batch, cache, kv_shapes_));
  if (before_forward_) KVFOLD_RETURN_IF_ERROR(before_forward_(batch, cache));
  KVFOLD_ASSIGN_OR_RETURN(const bool graphed, ForwardStepGraph(batch, cache, logits));
  if (graphed) return absl::OkStatus();
  const int64_t n = static_cast<int64_t>(batch.token_ids.size());
  const int64_t num_logits = static_cast<int64_t>(batch.logits_rows.size());
  EnsureWorkspace(n, num_logits);
  const bool staged = graph_options_.stage_inputs || graph_options_.graphs;
  if (staged) StageStep(batch, Ops::kEagerRegion);
  KeepProbabilitiesIfTheyFit(batch);
  const absl::Status status = RunStep(batch, cache);
  if (staged) ops_.EndStep();
  KVFOLD_RETURN_IF_ERROR(status);
  if (num_logits == 0) return absl::OkStatus();
  return Logits(ws_->last.view().Rows(0, num_logits), logits);
}

absl::Status LlamaModel::RunStep(const ForwardBatch& batch, const KvCache& cache) {
  const int64_t n = static_cast<int64_t>(batch.token_ids.size());
  const int64_t num_logits = static_cast<int64_t>(batch.logits_rows.size());
  Workspace& w = *ws_;
  KVFOLD_RETURN_IF_ERROR(Embed(batch.token_ids, w.x.view().Rows(0, n)));
  for (int i = 0; i < config().num_layers; ++i) {
    KVFOLD_RETURN_IF_ERROR(ForwardLayer(i, batch, cache));
  }
  if (num_logits == 0) return absl::OkStatus();
  const TensorView last = w.last.view().Rows(0, num_logits);
  ops_.GatherRows(w.x.view().Rows(0, n), batch.logits_rows, last);
  ops_.RmsNorm(last, final_norm_.view(), static_cast<float>(config().rms_norm_eps), last);
  return absl::OkStatus();
}

void LlamaModel::StageStep(const ForwardBatch& batch, int64_t region) {
  const size_t n = batch.token_ids.size();
  const HostArray arrays[] = {HostArray::Of(batch.token_ids), HostArray::Of(batch.positions),
                              HostArray::Of(batch.logits_rows),
                              // drop layers' bias broadcast (DroppedAttention)
                              HostArray::Of(absl::MakeConstSpan(ws_->zero_rows).first(n))};
  ops_.StageStepInputs(arrays, &batch.attention, region);
}

absl::StatusOr<bool> LlamaModel::ForwardStepGraph(const ForwardBatch& batch, const KvCache& cache,
                                                  float* logits) {
  // Collectives (gloo through the host) cannot be captured; NCCL could be, later.
  if (!graph_options_.graphs || !ops_.SupportsStepGraphs() || tp_.size != 1 ||
      observer_ != nullptr || !IsDecodeStep(batch)) {
    return false;
  }
  const AttentionBatch& a = batch.attention;
  const int32_t rows = ChooseBatchBucket(graph_options_.batch_buckets, a.num_seqs());
  const int32_t longest_table = std::min<int32_t>(
      (config().MaxContext() + cache.block_size() - 1) / cache.block_size(), cache.num_blocks());
  const int32_t width = ChooseTableWidth(a.max_blocks_per_seq, longest_table);
  if (rows == 0 || width == 0 || rows >= kMaxStepGraphDim || width >= kMaxStepGraphDim) {
    return false;
  }
  const int64_t key = StepGraphKey(model_id_, rows, width);
  if (eager_shapes_.contains(key)) return false;
  const int64_t num_logits = static_cast<int64_t>(batch.logits_rows.size());

  // The graphs write into the cache they were captured with: another cache (other addresses)
  // needs new ones.
  bool same_cache = graph_cache_.size() == 2 * static_cast<size_t>(cache.num_layers());
  for (int i = 0; same_cache && i < cache.num_layers(); ++i) {
    same_cache = graph_cache_[2 * i] == cache.layer(i).k.data &&
                 graph_cache_[2 * i + 1] == cache.layer(i).v.data;
  }
  if (!same_cache) {
    if (!warm_graphs_.empty()) ops_.DropStepGraphs();
    warm_graphs_.clear();
    graph_cache_.clear();
    for (int i = 0; i < cache.num_layers(); ++i) {
      graph_cache_.push_back(cache.layer(i).k.data);
      graph_cache_.push_back(cache.layer(i).v.data);
    }
  }
  EnsureWorkspace(rows, rows);  // a grown workspace drops every graph (it reads the old one)
  padded_.Pad(batch, rows, width);
  const ForwardBatch padded = padded_.View();
  StageStep(padded, key);
  // Probabilities are kept per step only when they fit, with a per-step width: a graph always
  // recomputes them in share layers instead (the same bits, ops.h).
  ws_->probs_cols = 0;
  absl::Status status;
  if (ops_.HasStepGraph(key)) {
    status = ops_.ReplayStepGraph(key);
  } else if (warm_graphs_.insert(key).second) {
    // First time: run eagerly, which sizes every scratch and caches the constant arguments the
    // capture will read.
    status = RunStep(padded, cache);
  } else {
    LOG(INFO) << "capturing a decode step graph: " << rows << " sequences, block tables " << width
              << " wide";
    status = ops_.BeginStepCapture(key);
    if (status.ok()) {
      const absl::Status run = RunStep(padded, cache);
      status = ops_.EndStepCapture(key);
      if (!run.ok()) status = run;
    }
    if (status.ok()) {
      status = ops_.ReplayStepGraph(key);
    } else {
      // Nothing ran during the capture: the step runs eagerly, now and for this shape from now on.
      LOG(WARNING) << "decode step graph capture failed (" << status
                   << "); this shape runs eagerly";
      eager_shapes_.insert(key);
      status = RunStep(padded, cache);
    }
  }
  ops_.EndStep();
  KVFOLD_RETURN_IF_ERROR(status);
  KVFOLD_RETURN_IF_ERROR(Logits(ws_->last.view().Rows(0, num_logits), logits));
  return true;
}

absl::StatusOr<TensorView> LlamaModel::ForwardToDeviceLogits(const ForwardBatch& batch,
                                                             const KvCache& cache) {
  if (tp_.size != 1) {
    return absl::UnimplementedError("device logits under tensor parallelism");
  }
  KVFOLD_RETURN_IF_ERROR(Forward(batch, cache, nullptr));
  const int64_t num_logits = static_cast<int64_t>(batch.logits_rows.size());
  if (num_logits == 0) return TensorView{nullptr, DType::kF32, 0, config().vocab_size};
  return ws_->logits.view().Rows(0, num_logits);
}

absl::Status LlamaModel::Embed(absl::Span<const int32_t> token_ids, TensorView x) {
  if (tp_.size == 1) {
    ops_.Embedding(token_ids, embedding_, x);
    return absl::OkStatus();
  }
  // This rank's tokens go to embed rows 1..; every other token reads the zero row 0, so the
  // all-reduce adds exact zeros to the one rank's row that holds the token.
  Workspace& w = *ws_;
  w.embed_ids.clear();
  w.embed_rows.resize(token_ids.size());
  for (size_t i = 0; i < token_ids.size(); ++i) {
    const int64_t local = token_ids[i] - vocab_.begin;
    const bool mine = local >= 0 && local < vocab_.count;
    w.embed_rows[i] = mine ? static_cast<int32_t>(w.embed_ids.size()) + 1 : 0;
    if (mine) w.embed_ids.push_back(static_cast<int32_t>(local));
  }
  const int64_t found = static_cast<int64_t>(w.embed_ids.size());
  if (found > 0) ops_.Embedding(w.embed_ids, embedding_, w.embed.view().Rows(1, found));
  ops_.GatherRows(w.embed.view().Rows(0, found + 1), w.embed_rows, x);
  return AllReduce(x);
}

absl::Status LlamaModel::Logits(const TensorView& last, float* logits) {
  const int64_t num_logits = last.rows;
  const TensorView out = vocab_.count > 0 ? ws_->logits.view().Rows(0, num_logits) : TensorView{};
  if (vocab_.count > 0) ops_.MatMul(last, lm_head_, nullptr, out);
  if (tp_.size == 1) {
    if (logits != nullptr) ops_.CopyToHost(out, logits);
    return absl::OkStatus();
  }
  // Each rank sends [num_logits, stride] (its columns, zero-padded to the common stride); the
  // gather is rank-major, so rank r's block lands in columns [r * stride, ...) of every row.
  Workspace& w = *ws_;
  const ModelConfig& c = config();
  const int64_t stride = VocabShardStride(c, tp_);
  const size_t block = static_cast<size_t>(num_logits * stride);
  w.host.resize(static_cast<size_t>(num_logits * vocab_.count));
  if (vocab_.count > 0) ops_.CopyToHost(out, w.host.data());
  w.gather_send.assign(block, 0.0f);
  for (int64_t row = 0; row < num_logits; ++row) {
    std::copy_n(w.host.data() + row * vocab_.count, vocab_.count,
                w.gather_send.data() + row * stride);
  }
  w.gather_recv.resize(block * tp_.size);
  if (absl::Status s = tp_.comm->AllGather(w.gather_send.data(), block, w.gather_recv.data());
      !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("tensor-parallel all-gather of logits: ", s.message()));
  }
  for (int r = 0; r < tp_.size; ++r) {
    const ShardRange part = VocabShard(c, {r, tp_.size, nullptr});
    for (int64_t row = 0; row < num_logits; ++row) {
      std::copy_n(w.gather_recv.data() + r * block + row * stride, part.count,
                  logits + row * c.vocab_size + part.begin);
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::AllReduce(TensorView o) {
  if (tp_.size == 1) return absl::OkStatus();
  absl::Status s;
  if (ops_.device() == Device::kCpu || tp_.comm->accepts_device_memory()) {
    // In place: host memory, or device memory a device communicator (NCCL) orders after the ops'
    // stream.
    s = tp_.comm->AllReduceSum(o.f32(), static_cast<size_t>(o.numel()));
  } else {
    // Through the host: a host communicator (gloo) with device activations.
    std::vector<float>& host = ws_->host;
    host.resize(static_cast<size_t>(o.numel()));
    ops_.CopyToHost(o, host.data());
    s = tp_.comm->AllReduceSum(host.data(), host.size());
    if (s.ok()) ops_.CopyFromHost(host.data(), o);
  }
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("tensor-parallel all-reduce: ", s.message()));
}

void LlamaModel::KeepProbabilitiesIfTheyFit(const ForwardBatch& batch) {
  Workspace& w = *ws_;
  w.probs_cols = 0;
  if (std::none_of(share_source_.begin(), share_source_.end(), [](bool b) { return b; })) return;
  const absl::Span<const int32_t> context = batch.attention.context_len;
  const int32_t longest = *std::max_element(context.begin(), context.end());
  const int64_t floats = static_cast<int64_t>(batch.token_ids.size()) * local_.num_heads * longest;
  if (floats > kMaxProbFloats) return;
  if (floats > w.probs_capacity) {
    w.source_probs.resize(config().num_layers);
    for (int i = 0; i < config().num_layers; ++i) {
      if (share_source_[i]) w.source_probs[i] = ops_.Allocate(DType::kF32, 1, floats);
    }
    w.probs_capacity = floats;
  }
  w.probs_cols = longest;
}

std::optional<AttentionProbs> LlamaModel::KeptProbabilities(int source, int64_t num_tokens,
                                                            AttentionProbs::Mode mode) const {
  const Workspace& w = *ws_;
  if (w.probs_cols == 0) return std::nullopt;
  AttentionProbs probs;
  probs.p = {w.source_probs[source].view().data, DType::kF32, num_tokens * local_.num_heads,
             w.probs_cols};
  probs.mode = mode;
  return probs;
}

absl::Status LlamaModel::ForwardLayer(int index, const ForwardBatch& batch, const KvCache& cache) {
  KVFOLD_RETURN_IF_ERROR(AttentionSublayer(index, batch, cache));
  return MlpSublayer(index, static_cast<int64_t>(batch.token_ids.size()));
}

absl::Status LlamaModel::AttentionSublayer(int index, const ForwardBatch& batch,
                                           const KvCache& cache) {
  const LayerPlan& p = local_plan_.layers[index];
  switch (p.mode) {
    case AttentionMode::kFull:
      return FullAttention(index, batch, cache.layer(index), /*write_kv=*/true);
    case AttentionMode::kKvFrom:
      // The source is an earlier full layer: this step's K/V are already in its cache.
      return FullAttention(index, batch, cache.layer(p.source), /*write_kv=*/false);
    case AttentionMode::kDrop:
      DroppedAttention(index, static_cast<int64_t>(batch.token_ids.size()));
      return absl::OkStatus();
    case AttentionMode::kShare:
      return SharedAttention(index, batch, cache);
    case AttentionMode::kCluster:
      return ClusteredAttention(index, batch, cache);
  }
  LOG(FATAL) << "layer " << index << ": mode " << AttentionModeName(p.mode)
             << " is rejected by Load";
  return absl::InternalError("unreachable");
}

absl::Status LlamaModel::FullAttention(int index, const ForwardBatch& batch, const KvCacheLayer& kv,
                                       bool write_kv) {
  const ModelConfig& c = local_;
  const Layer& l = layers_[index];
  Workspace& w = *ws_;
  const int64_t n = static_cast<int64_t>(batch.token_ids.size());
  const TensorView x = w.x.view().Rows(0, n), h = w.h.view().Rows(0, n);
  // A layer that share layers read keeps its queries (and probabilities) for them.
  const TensorView q = (share_source_[index] ? w.source_q[index] : w.q).view().Rows(0, n);
  const TensorView attn = w.attn.view().Rows(0, n), o = w.o.view().Rows(0, n);
  const RopeTable rope{rope_table_.view()};
  const std::optional<AttentionProbs> probs =
      share_source_[index] ? KeptProbabilities(index, n, AttentionProbs::Mode::kWrite)
                           : std::nullopt;

  ops_.RmsNorm(x, l.input_norm.view(), static_cast<float>(c.rms_norm_eps), h);
  ops_.MatMul(h, l.wq, OrNull(l.bq), q);
  if (write_kv) {
    const TensorView k = w.k.view().Rows(0, n), v = w.v.view().Rows(0, n);
    ops_.MatMul(h, l.wk, OrNull(l.bk), k);
    ops_.MatMul(h, l.wv, OrNull(l.bv), v);
    ops_.RopeWriteKv(q, c.num_heads, k, v, c.head_dim, batch.positions, rope, batch.attention, kv);
  } else {
    ops_.Rope(q, c.num_heads, c.head_dim, batch.positions, rope);
  }
  ops_.FoldedPagedAttention(q, kv, kv, AttentionHeadMap{}, batch.attention, c.num_heads,
                            AttentionScale(), attn, probs ? &*probs : nullptr);
  ops_.MatMul(attn, l.wo, OrNull(l.bo), o);
  KVFOLD_RETURN_IF_ERROR(AllReduce(o));
  if (observer_ != nullptr && write_kv) {
    observer_->OnAttention({index, x, q, w.k.view().Rows(0, n), o});
  }
  ops_.Add(x, o);
  return absl::OkStatus();
}

absl::Status LlamaModel::SharedAttention(int index, const ForwardBatch& batch,
                                         const KvCache& cache) {
  const ModelConfig& c = local_;
  const Layer& l = layers_[index];
  const int source = local_plan_.layers[index].source;
  Workspace& w = *ws_;
  const int64_t n = static_cast<int64_t>(batch.token_ids.size());
  const TensorView x = w.x.view().Rows(0, n), h = w.h.view().Rows(0, n);
  const TensorView v = w.v.view().Rows(0, n), attn = w.attn.view().Rows(0, n);
  const TensorView o = w.o.view().Rows(0, n);
  const std::optional<AttentionProbs> probs =
      KeptProbabilities(source, n, AttentionProbs::Mode::kRead);

  // No Q or K projection: the scores are the source layer's, from its queries and keys.
  ops_.RmsNorm(x, l.input_norm.view(), static_cast<float>(c.rms_norm_eps), h);
  ops_.MatMul(h, l.wv, OrNull(l.bv), v);
  ops_.WriteKv(TensorView{}, v, batch.attention, cache.layer(index));
  ops_.FoldedPagedAttention(w.source_q[source].view().Rows(0, n), cache.layer(source),
                            cache.layer(index), HeadMap(l), batch.attention, c.num_heads,
                            AttentionScale(), attn, probs ? &*probs : nullptr);
  ops_.MatMul(attn, l.wo, OrNull(l.bo), o);
  KVFOLD_RETURN_IF_ERROR(AllReduce(o));
  ops_.Add(x, o);
  return absl::OkStatus();
}

absl::Status LlamaModel::ClusteredAttention(int index, const ForwardBatch& batch,
                                            const KvCache& cache) {
  const ModelConfig& c = local_;
  const Layer& l = layers_[index];
  Workspace& w = *ws_;
  const int64_t n = static_cast<int64_t>(batch.token_ids.size());
  const TensorView x = w.x.view().Rows(0, n), h = w.h.view().Rows(0, n);
  const TensorView q = w.q.view().Rows(0, n), v = w.v.view().Rows(0, n);
  const TensorView attn = w.attn.view().Rows(0, n), o = w.o.view().Rows(0, n);
  // Keys of the representatives only: [n, stored_k_heads * head_dim] in the k buffer.
  const TensorView k{w.k.view().data, DType::kF32, n,
                     static_cast<int64_t>(l.heads.stored_k_heads) * c.head_dim};
  const RopeTable rope{rope_table_.view()};
  const KvCacheLayer kv = cache.layer(index);

  ops_.RmsNorm(x, l.input_norm.view(), static_cast<float>(c.rms_norm_eps), h);
  ops_.MatMul(h, l.wq, OrNull(l.bq), q);
  ops_.MatMul(h, l.wk, OrNull(l.bk), k);
  ops_.MatMul(h, l.wv, OrNull(l.bv), v);
  ops_.RopeWriteKv(q, c.num_heads, k, v, c.head_dim, batch.positions, rope, batch.attention, kv);
  ops_.FoldedPagedAttention(q, kv, kv, HeadMap(l), batch.attention, c.num_heads, AttentionScale(),
                            attn);
  ops_.MatMul(attn, l.wo, OrNull(l.bo), o);
  KVFOLD_RETURN_IF_ERROR(AllReduce(o));
  ops_.Add(x, o);
  return absl::OkStatus();
}

AttentionHeadMap LlamaModel::HeadMap(const Layer& l) {
  return {l.heads.score_head, l.heads.k_head, l.heads.v_head};
}

float LlamaModel::AttentionScale() const {
  return 1.0f / std::sqrt(static_cast<float>(config().head_dim));
}

void LlamaModel::DroppedAttention(int index, int64_t n) {
  const Layer& l = layers_[index];
  if (l.drop_bias.view().data == nullptr) return;
  Workspace& w = *ws_;
  const TensorView bias_rows = w.o.view().Rows(0, n);
  ops_.GatherRows(l.drop_bias.view(), absl::MakeConstSpan(w.zero_rows).first(n), bias_rows);
  ops_.Add(w.x.view().Rows(0, n), bias_rows);
}

absl::Status LlamaModel::MlpSublayer(int index, int64_t n) {
  const Layer& l = layers_[index];
  Workspace& w = *ws_;
  const TensorView x = w.x.view().Rows(0, n), h = w.h.view().Rows(0, n);
  const TensorView o = w.o.view().Rows(0, n);
  const TensorView gate = w.gate.view().Rows(0, n), up = w.up.view().Rows(0, n);
  ops_.RmsNorm(x, l.post_attention_norm.view(), static_cast<float>(config().rms_norm_eps), h);
  ops_.MatMul(h, l.w_gate, OrNull(l.b_gate), gate);
  ops_.MatMul(h, l.w_up, OrNull(l.b_up), up);
  ops_.SiluMul(gate, up, gate);
  ops_.MatMul(gate, l.w_down, OrNull(l.b_down), o);
  KVFOLD_RETURN_IF_ERROR(AllReduce(o));
  ops_.Add(x, o);
  return absl::OkStatus();
}

}  // namespace kvfold
