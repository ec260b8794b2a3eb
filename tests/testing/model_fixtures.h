// Loading models and reading golden files in tests: one copy for every test that needs them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "nlohmann/json.hpp"
#include "tests/testing/paths.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/attention_plan.h"
#include "worker/llama_model.h"
#include "worker/model_loader.h"
#include "worker/safetensors.h"

namespace kvfold::testing {

// A model folder or .gguf file loaded onto `ops`.
inline absl::StatusOr<std::unique_ptr<LlamaModel>> LoadModel(const std::string& path, Ops& ops) {
  absl::StatusOr<std::unique_ptr<WeightSource>> weights = OpenWeights(path);
  if (!weights.ok()) return weights.status();
  return LlamaModel::Load(*std::move(weights), ops);
}

// The model fingerprint an attention plan for stories260K must carry.
inline std::string StoriesFingerprint() {
  absl::StatusOr<std::unique_ptr<WeightSource>> w = OpenWeights(StoriesPath());
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *ModelFingerprint((*w)->config(), **w) : "";
}

// A golden file's F32 tensor `name`, flattened; a test failure (and nothing) if it is missing.
inline std::vector<float> GoldenFloats(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsTensor* t = f.Find(name);
  if (t == nullptr || t->dtype != DType::kF32) {
    ADD_FAILURE() << name << " missing or not F32 in " << f.path();
    return {};
  }
  const float* p = static_cast<const float*>(t->data);
  return std::vector<float>(p, p + t->nbytes / sizeof(float));
}

// Token ids, which golden files store as F32 (exact below 2^24).
inline std::vector<int32_t> GoldenIds(const SafetensorsFile& f, const std::string& name) {
  std::vector<int32_t> ids;
  for (float x : GoldenFloats(f, name)) ids.push_back(static_cast<int32_t>(x));
  return ids;
}

// The shape of a random Llama written by WriteRandomLlama.
struct RandomLlamaSpec {
  int layers = 4, hidden = 64, heads = 16, kv_heads = 8, head_dim = 8, ffn = 128, vocab = 97;
  bool attention_bias = false;  // q/k/v/o_proj biases (Llama's attention_bias)
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  uint32_t seed = 2026;
};

// A random F32 Llama (config.json + model.safetensors) in `dir`: weights scaled so attention is
// far from uniform and the residual stream stays O(1), norm weights near 1, biases small.
inline void WriteRandomLlama(const std::string& dir, const RandomLlamaSpec& s) {
  std::mt19937 rng(s.seed);
  std::vector<TensorSpec> specs;
  auto add = [&](const std::string& name, int64_t rows, int64_t cols, float stddev, float mean) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> values(rows * cols);
    for (float& v : values) v = mean + stddev * dist(rng);
    specs.push_back({name, "F32", rows == 1 ? std::vector<int64_t>{cols} : std::vector{rows, cols},
                     F32Bytes(values)});
  };
  const int64_t q_dim = int64_t{s.heads} * s.head_dim, kv_dim = int64_t{s.kv_heads} * s.head_dim;
  add("model.embed_tokens.weight", s.vocab, s.hidden, 1.0f, 0.0f);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", 1, s.hidden, 0.1f, 1.0f);
    add(p + "self_attn.q_proj.weight", q_dim, s.hidden, 0.2f, 0.0f);
    add(p + "self_attn.k_proj.weight", kv_dim, s.hidden, 0.2f, 0.0f);
    add(p + "self_attn.v_proj.weight", kv_dim, s.hidden, 0.3f, 0.0f);
    add(p + "self_attn.o_proj.weight", s.hidden, q_dim, 0.15f, 0.0f);
    if (s.attention_bias) {
      add(p + "self_attn.q_proj.bias", 1, q_dim, 0.1f, 0.0f);
      add(p + "self_attn.k_proj.bias", 1, kv_dim, 0.1f, 0.0f);
      add(p + "self_attn.v_proj.bias", 1, kv_dim, 0.1f, 0.0f);
      add(p + "self_attn.o_proj.bias", 1, s.hidden, 0.1f, 0.0f);
    }
    add(p + "post_attention_layernorm.weight", 1, s.hidden, 0.1f, 1.0f);
    add(p + "mlp.gate_proj.weight", s.ffn, s.hidden, 0.125f, 0.0f);
    add(p + "mlp.up_proj.weight", s.ffn, s.hidden, 0.125f, 0.0f);
    add(p + "mlp.down_proj.weight", s.hidden, s.ffn, 0.09f, 0.0f);
    if (s.mlp_bias) {
      add(p + "mlp.gate_proj.bias", 1, s.ffn, 0.1f, 0.0f);
      add(p + "mlp.up_proj.bias", 1, s.ffn, 0.1f, 0.0f);
      add(p + "mlp.down_proj.bias", 1, s.hidden, 0.1f, 0.0f);
    }
  }
  add("model.norm.weight", 1, s.hidden, 0.1f, 1.0f);
  if (!s.tie_word_embeddings) add("lm_head.weight", s.vocab, s.hidden, 0.3f, 0.0f);
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/model.safetensors", SafetensorsBytes(specs));
  const nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                                 {"model_type", "llama"},
                                 {"hidden_size", s.hidden},
                                 {"intermediate_size", s.ffn},
                                 {"num_hidden_layers", s.layers},
                                 {"num_attention_heads", s.heads},
                                 {"num_key_value_heads", s.kv_heads},
                                 {"head_dim", s.head_dim},
                                 {"vocab_size", s.vocab},
                                 {"max_position_embeddings", 512},
                                 {"rms_norm_eps", 1e-5},
                                 {"rope_theta", 10000.0},
                                 {"hidden_act", "silu"},
                                 {"attention_bias", s.attention_bias},
                                 {"mlp_bias", s.mlp_bias},
                                 {"tie_word_embeddings", s.tie_word_embeddings},
                                 {"bos_token_id", 1},
                                 {"eos_token_id", 2},
                                 {"torch_dtype", "float32"}};
  WriteFile(dir + "/config.json", config.dump(2));
}

}  // namespace kvfold::testing
