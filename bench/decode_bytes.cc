#include "bench/decode_bytes.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "worker/kv_cache.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

class Summer {
 public:
  explicit Summer(const WeightSource& source) : source_(source) {}
  absl::Status Add(const std::string& name, int64_t rows, int64_t cols) {
    KVFOLD_ASSIGN_OR_RETURN(TensorView v, source_.Get(name, rows, cols));
    total_ += v.nbytes();
    return absl::OkStatus();
  }
  absl::Status AddIf(bool present, const std::string& name, int64_t n) {
    return present ? Add(name, 1, n) : absl::OkStatus();
  }
  size_t total() const { return total_; }

 private:
  const WeightSource& source_;
  size_t total_ = 0;
};

}  // namespace

absl::StatusOr<DecodeBytes> ComputeDecodeBytes(const WeightSource& source, DType kv_dtype) {
  const ModelConfig& c = source.config();
  const int64_t d = c.hidden_size, ffn = c.intermediate_size;
  const int64_t q_dim = static_cast<int64_t>(c.num_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  Summer sum(source);
  // lm_head reads the whole vocab x d matrix: its own, or the tied embedding.
  const char* lm_head =
      source.Has("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight";
  KVFOLD_RETURN_IF_ERROR(sum.Add(lm_head, c.vocab_size, d));
  KVFOLD_RETURN_IF_ERROR(sum.Add("model.norm.weight", 1, d));
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    KVFOLD_RETURN_IF_ERROR(sum.Add(p + "input_layernorm.weight", 1, d));
    KVFOLD_RETURN_IF_ERROR(sum.Add(p + "post_attention_layernorm.weight", 1, d));
    KVFOLD_RETURN_IF_ERROR(sum.Add(p + "self_attn.q_proj.weight", q_dim, d));
    KVFOLD_RETURN_IF_ERROR(sum.Add(p + "self_attn.k_proj.weight", kv_dim, d));
    KVFOLD_RETURN_IF_ERROR(sum.Add(p + "self_attn.v_proj.weight", kv_dim, d));
    KVFOLD_RETURN_IF_ERROR(sum.Add(p + "self_attn.o_proj.weight", d, q_dim));
    KVFOLD_RETURN_IF_ERROR(sum.Add(p + "mlp.gate_proj.weight", ffn, d));
    KVFOLD_RETURN_IF_ERROR(sum.Add(p + "mlp.up_proj.weight", ffn, d));
    KVFOLD_RETURN_IF_ERROR(sum.Add(p + "mlp.down_proj.weight", d, ffn));
    KVFOLD_RETURN_IF_ERROR(sum.AddIf(c.qkv_bias, p + "self_attn.q_proj.bias", q_dim));
    KVFOLD_RETURN_IF_ERROR(sum.AddIf(c.qkv_bias, p + "self_attn.k_proj.bias", kv_dim));
    KVFOLD_RETURN_IF_ERROR(sum.AddIf(c.qkv_bias, p + "self_attn.v_proj.bias", kv_dim));
    KVFOLD_RETURN_IF_ERROR(sum.AddIf(c.o_bias, p + "self_attn.o_proj.bias", d));
    KVFOLD_RETURN_IF_ERROR(sum.AddIf(c.mlp_bias, p + "mlp.gate_proj.bias", ffn));
    KVFOLD_RETURN_IF_ERROR(sum.AddIf(c.mlp_bias, p + "mlp.up_proj.bias", ffn));
    KVFOLD_RETURN_IF_ERROR(sum.AddIf(c.mlp_bias, p + "mlp.down_proj.bias", d));
  }
  DecodeBytes b;
  b.weights = sum.total();
  KVFOLD_ASSIGN_OR_RETURN(TensorView embedding,
                          source.Get("model.embed_tokens.weight", c.vocab_size, d));
  b.embedding_row = embedding.row_bytes();
  b.kv_per_token = KvBytesPerToken(KvLayerShapes(c), kv_dtype);
  return b;
}

}  // namespace kvfold
