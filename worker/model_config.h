// The shape and hyper-parameters of a Llama-family checkpoint, read from Hugging Face's
// config.json and generation_config.json. Plain data; GGUF metadata fills the same struct later.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvfold {

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
  // Per-frequency divisors, llama.cpp's form of Llama 3 scaling (a GGUF's rope_freqs.weight):
  // inverse frequency i is divided by freq_factors[i], after `type`'s scaling. Empty: none.
  std::vector<float> freq_factors;
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // config's head_dim, else hidden_size / num_heads
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool qkv_bias = false;  // Qwen2: always; Llama: attention_bias
  bool o_bias = false;    // Llama attention_bias also biases o_proj
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  // Mistral's sliding_window; Qwen2's only when use_sliding_window is true. Layers at index >=
  // sliding_window_start_layer attend to the last `sliding_window` positions only (Qwen2's
  // max_window_layers; 0 for Mistral, whose every layer slides).
  std::optional<int> sliding_window;
  int sliding_window_start_layer = 0;
  std::optional<int> bos_token_id;
  std::vector<int> eos_token_ids;  // generation_config.json's, else config.json's

  // Parses config.json text and validates the result; `source` names the file in errors.
  static absl::StatusOr<ModelConfig> FromJson(std::string_view config_json,
                                              std::string_view source);
  // Overrides EOS/BOS from generation_config.json text (where it states them), then validates.
  absl::Status ApplyGenerationConfig(std::string_view generation_config_json,
                                     std::string_view source);
  // The longest sequence served exactly: max_position_embeddings, or the sliding window when any
  // layer uses one (within the window, windowed attention equals full attention; windowed
  // kernels will lift this cap).
  int MaxContext() const;

  // Checks that the fields are consistent (positive sizes, heads divide, ...).
  absl::Status Validate() const;
};

}  // namespace kvfold
