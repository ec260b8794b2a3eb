#include "worker/model_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

using Json = nlohmann::json;

// Debian's Abseil predates absl::string_view aliasing std::string_view; convert at the seams.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Parser messages quote the token they stopped at, which in a corrupt file can be huge.
absl::string_view Clip(absl::string_view s) { return s.substr(0, 256); }

enum class Family { kLlama, kMistral, kQwen2 };

// Typed access to one JSON object's fields. Every accessor checks the type before converting, so
// nothing here throws; a wrong type is an InvalidArgument naming the file and the field. An absent
// or null field leaves the output untouched (the caller's default stands).
class FieldReader {
 public:
  FieldReader(const Json& object, absl::string_view source, absl::string_view prefix = "")
      : object_(object), source_(source), prefix_(prefix) {}

  absl::string_view source() const { return source_; }

  bool Has(const char* key) const {
    auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }

  absl::Status Required(const char* key) const {
    if (Has(key)) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": required field '", prefix_, key, "' is missing"));
  }

  absl::Status Int(const char* key, int* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    return ToInt(*v, key, out);
  }

  absl::Status OptionalInt(const char* key, std::optional<int>* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    int value = 0;
    KVFOLD_RETURN_IF_ERROR(ToInt(*v, key, &value));
    *out = value;
    return absl::OkStatus();
  }

  absl::Status Double(const char* key, double* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return TypeError(key, "a number", *v);
    *out = v->get<double>();
    return absl::OkStatus();
  }

  absl::Status Bool(const char* key, bool* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return TypeError(key, "a boolean", *v);
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const char* key, std::string* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return TypeError(key, "a string", *v);
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  // An integer or a list of integers (eos_token_id).
  absl::Status IntList(const char* key, std::vector<int>* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    const Json items = v->is_array() ? *v : Json::array({*v});
    std::vector<int> values;
    for (const Json& item : items) {
      if (!IsInt(item)) return TypeError(key, "an integer or a list of integers", *v);
      values.push_back(0);
      KVFOLD_RETURN_IF_ERROR(ToInt(item, key, &values.back()));
    }
    *out = std::move(values);
    return absl::OkStatus();
  }

  absl::Status TypeError(const char* key, absl::string_view expected, const Json& v) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field '", prefix_, key, "' must be ",
                                                   expected, ", got ", v.type_name()));
  }

 private:
  const Json* Find(const char* key) const {
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  static bool IsInt(const Json& v) { return v.is_number_integer(); }  // includes unsigned

  absl::Status ToInt(const Json& v, const char* key, int* out) const {
    if (!IsInt(v)) return TypeError(key, "an integer", v);
    // Compare as the stored representation so huge unsigned values cannot wrap.
    bool in_range = v.is_number_unsigned()
                        ? v.get<uint64_t>() <= uint64_t{std::numeric_limits<int>::max()}
                        : v.get<int64_t>() >= std::numeric_limits<int>::min() &&
                              v.get<int64_t>() <= std::numeric_limits<int>::max();
    if (!in_range) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": field '", prefix_, key, "' is out of range for a 32-bit int"));
    }
    *out = static_cast<int>(v.get<int64_t>());
    return absl::OkStatus();
  }

  const Json& object_;
  absl::string_view source_;
  absl::string_view prefix_;
};

absl::StatusOr<Json> ParseObject(absl::string_view text, absl::string_view source) {
  Json json;
  try {
    json = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", Clip(e.what())));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object, got ", json.type_name()));
  }
  return json;
}

absl::StatusOr<Family> ReadFamily(const Json& json, absl::string_view source, std::string* arch) {
  FieldReader fields(json, source);
  auto it = json.find("architectures");
  if (it != json.end() && !it->is_null()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string()) {
      return fields.TypeError("architectures", "a non-empty list of strings", *it);
    }
    *arch = (*it)[0].get<std::string>();
  } else {
    // No architectures: fall back on model_type.
    std::string model_type;
    KVFOLD_RETURN_IF_ERROR(fields.String("model_type", &model_type));
    if (model_type == "llama") *arch = "LlamaForCausalLM";
    if (model_type == "mistral") *arch = "MistralForCausalLM";
    if (model_type == "qwen2") *arch = "Qwen2ForCausalLM";
    if (arch->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source,
          ": neither 'architectures' nor a known 'model_type' (llama, mistral, qwen2) is "
          "given",
          model_type.empty() ? "" : absl::StrCat("; model_type is '", model_type, "'")));
    }
  }
  if (*arch == "LlamaForCausalLM") return Family::kLlama;
  if (*arch == "MistralForCausalLM") return Family::kMistral;
  if (*arch == "Qwen2ForCausalLM") return Family::kQwen2;
  return absl::UnimplementedError(
      absl::StrCat(source, ": architecture '", *arch,
                   "' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
}

// rope_scaling (or transformers 5's rope_parameters): null, default, linear or llama3.
absl::Status ReadRopeScaling(const Json& rope, absl::string_view source, absl::string_view key,
                             RopeScaling* out) {
  const std::string prefix = absl::StrCat(key, ".");
  FieldReader fields(rope, source, prefix);
  if (!rope.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field '", key, "' must be an object or null, got ", rope.type_name()));
  }
  std::string type;
  KVFOLD_RETURN_IF_ERROR(fields.String("type", &type));  // older configs' spelling
  KVFOLD_RETURN_IF_ERROR(fields.String("rope_type", &type));
  if (type.empty() && fields.Has("factor")) {
    // transformers itself fails on a scaling factor of no stated type.
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field '", key, "' has a factor but no 'rope_type'"));
  }
  if (type.empty() || type == "default") {
    *out = RopeScaling{};
    return absl::OkStatus();
  }
  RopeScaling scaling;
  if (type == "linear") {
    scaling.type = RopeScaling::Type::kLinear;
    KVFOLD_RETURN_IF_ERROR(fields.Required("factor"));
    KVFOLD_RETURN_IF_ERROR(fields.Double("factor", &scaling.factor));
  } else if (type == "llama3") {
    scaling.type = RopeScaling::Type::kLlama3;
    for (const char* field :
         {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
      KVFOLD_RETURN_IF_ERROR(fields.Required(field));
    }
    KVFOLD_RETURN_IF_ERROR(fields.Double("factor", &scaling.factor));
    KVFOLD_RETURN_IF_ERROR(fields.Double("low_freq_factor", &scaling.low_freq_factor));
    KVFOLD_RETURN_IF_ERROR(fields.Double("high_freq_factor", &scaling.high_freq_factor));
    KVFOLD_RETURN_IF_ERROR(
        fields.Int("original_max_position_embeddings", &scaling.original_max_position_embeddings));
  } else {
    return absl::UnimplementedError(absl::StrCat(source, ": ", key, " type '", type,
                                                 "' is not supported (default, linear, llama3)"));
  }
  *out = scaling;
  return absl::OkStatus();
}

absl::Status ReadRope(const Json& json, absl::string_view source, ModelConfig* config) {
  FieldReader fields(json, source);
  KVFOLD_RETURN_IF_ERROR(fields.Double("rope_theta", &config->rope_theta));
  if (fields.Has("rope_scaling")) {
    return ReadRopeScaling(*json.find("rope_scaling"), source, "rope_scaling",
                           &config->rope_scaling);
  }
  if (fields.Has("rope_parameters")) {
    const Json& params = *json.find("rope_parameters");
    if (params.is_object() && !fields.Has("rope_theta")) {
      KVFOLD_RETURN_IF_ERROR(FieldReader(params, source, "rope_parameters.")
                                 .Double("rope_theta", &config->rope_theta));
    }
    return ReadRopeScaling(params, source, "rope_parameters", &config->rope_scaling);
  }
  return absl::OkStatus();
}

absl::Status ReadSizes(const FieldReader& fields, ModelConfig* config) {
  const std::pair<const char*, int*> required[] = {
      {"hidden_size", &config->hidden_size},
      {"intermediate_size", &config->intermediate_size},
      {"num_hidden_layers", &config->num_layers},
      {"num_attention_heads", &config->num_heads},
      {"vocab_size", &config->vocab_size},
      {"max_position_embeddings", &config->max_position_embeddings}};
  for (const auto& [key, out] : required) {
    KVFOLD_RETURN_IF_ERROR(fields.Required(key));
    KVFOLD_RETURN_IF_ERROR(fields.Int(key, out));
  }
  config->num_kv_heads = config->num_heads;
  KVFOLD_RETURN_IF_ERROR(fields.Int("num_key_value_heads", &config->num_kv_heads));
  if (fields.Has("head_dim")) {
    KVFOLD_RETURN_IF_ERROR(fields.Int("head_dim", &config->head_dim));
  } else if (config->num_heads > 0) {
    if (config->hidden_size % config->num_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(fields.source(), ": hidden_size (", config->hidden_size,
                       ") is not a multiple of num_attention_heads (", config->num_heads,
                       ") and no head_dim is given"));
    }
    config->head_dim = config->hidden_size / config->num_heads;
  }
  KVFOLD_RETURN_IF_ERROR(fields.Double("rms_norm_eps", &config->rms_norm_eps));
  return absl::OkStatus();
}

// Biases and sliding windows differ by family.
absl::Status ReadFamilyFields(const FieldReader& fields, Family family, ModelConfig* config) {
  switch (family) {
    case Family::kLlama: {
      bool attention_bias = false;
      KVFOLD_RETURN_IF_ERROR(fields.Bool("attention_bias", &attention_bias));
      config->qkv_bias = config->o_bias = attention_bias;
      KVFOLD_RETURN_IF_ERROR(fields.Bool("mlp_bias", &config->mlp_bias));
      break;
    }
    case Family::kMistral:
      KVFOLD_RETURN_IF_ERROR(fields.OptionalInt("sliding_window", &config->sliding_window));
      break;
    case Family::kQwen2: {
      config->qkv_bias = true;  // Qwen2 always biases q, k, v and never o.
      bool use_sliding_window = false;
      KVFOLD_RETURN_IF_ERROR(fields.Bool("use_sliding_window", &use_sliding_window));
      if (use_sliding_window) {
        KVFOLD_RETURN_IF_ERROR(fields.OptionalInt("sliding_window", &config->sliding_window));
        KVFOLD_RETURN_IF_ERROR(
            fields.Int("max_window_layers", &config->sliding_window_start_layer));
      }
      break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseConfig(const Json& json, absl::string_view source) {
  ModelConfig config;
  absl::StatusOr<Family> family = ReadFamily(json, source, &config.architecture);
  if (!family.ok()) return family.status();
  FieldReader fields(json, source);
  std::string hidden_act = "silu";
  KVFOLD_RETURN_IF_ERROR(fields.String("hidden_act", &hidden_act));
  if (hidden_act != "silu") {
    return absl::UnimplementedError(
        absl::StrCat(source, ": hidden_act '", hidden_act, "' is not supported (silu)"));
  }
  KVFOLD_RETURN_IF_ERROR(ReadSizes(fields, &config));
  KVFOLD_RETURN_IF_ERROR(ReadRope(json, source, &config));
  KVFOLD_RETURN_IF_ERROR(ReadFamilyFields(fields, *family, &config));
  KVFOLD_RETURN_IF_ERROR(fields.Bool("tie_word_embeddings", &config.tie_word_embeddings));
  KVFOLD_RETURN_IF_ERROR(fields.OptionalInt("bos_token_id", &config.bos_token_id));
  KVFOLD_RETURN_IF_ERROR(fields.IntList("eos_token_id", &config.eos_token_ids));
  return config;
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(std::string_view config_json,
                                                  std::string_view source) {
  absl::StatusOr<Json> json = ParseObject(Sv(config_json), Sv(source));
  if (!json.ok()) return json.status();
  absl::StatusOr<ModelConfig> config = ParseConfig(*json, Sv(source));
  if (!config.ok()) return config.status();
  if (absl::Status s = config->Validate(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(Sv(source), ": ", s.message()));
  }
  return config;
}

absl::Status ModelConfig::ApplyGenerationConfig(std::string_view generation_config_json,
                                                std::string_view source) {
  absl::StatusOr<Json> json = ParseObject(Sv(generation_config_json), Sv(source));
  if (!json.ok()) return json.status();
  // Read into copies so a type error leaves this config as it was.
  std::optional<int> bos = bos_token_id;
  std::vector<int> eos = eos_token_ids;
  FieldReader fields(*json, Sv(source));
  KVFOLD_RETURN_IF_ERROR(fields.OptionalInt("bos_token_id", &bos));
  KVFOLD_RETURN_IF_ERROR(fields.IntList("eos_token_id", &eos));
  ModelConfig updated = *this;
  updated.bos_token_id = bos;
  updated.eos_token_ids = std::move(eos);
  if (absl::Status s = updated.Validate(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(Sv(source), ": ", s.message()));
  }
  *this = std::move(updated);
  return absl::OkStatus();
}

absl::Status ModelConfig::Validate() const {
  auto positive = [](const char* name, double value) -> absl::Status {
    if (value > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(name, " must be positive, got ", value));
  };
  KVFOLD_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  KVFOLD_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size));
  KVFOLD_RETURN_IF_ERROR(positive("num_hidden_layers", num_layers));
  KVFOLD_RETURN_IF_ERROR(positive("num_attention_heads", num_heads));
  KVFOLD_RETURN_IF_ERROR(positive("num_key_value_heads", num_kv_heads));
  KVFOLD_RETURN_IF_ERROR(positive("head_dim", head_dim));
  KVFOLD_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  KVFOLD_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  KVFOLD_RETURN_IF_ERROR(positive("rms_norm_eps", rms_norm_eps));
  KVFOLD_RETURN_IF_ERROR(positive("rope_theta", rope_theta));
  if (num_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_attention_heads (", num_heads,
                                                   ") must be a multiple of num_key_value_heads (",
                                                   num_kv_heads, ")"));
  }
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim must be even for rotary embeddings, got ", head_dim));
  }
  if (rope_scaling.type != RopeScaling::Type::kNone) {
    KVFOLD_RETURN_IF_ERROR(positive("rope_scaling.factor", rope_scaling.factor));
  }
  if (rope_scaling.type == RopeScaling::Type::kLlama3) {
    KVFOLD_RETURN_IF_ERROR(positive("rope_scaling.original_max_position_embeddings",
                                    rope_scaling.original_max_position_embeddings));
    KVFOLD_RETURN_IF_ERROR(positive("rope_scaling.low_freq_factor", rope_scaling.low_freq_factor));
    if (rope_scaling.high_freq_factor <= rope_scaling.low_freq_factor) {
      return absl::InvalidArgumentError(
          absl::StrCat("rope_scaling.high_freq_factor (", rope_scaling.high_freq_factor,
                       ") must exceed low_freq_factor (", rope_scaling.low_freq_factor, ")"));
    }
  }
  if (!rope_scaling.freq_factors.empty()) {
    if (static_cast<int>(rope_scaling.freq_factors.size()) != head_dim / 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("RoPE frequency factors: ", rope_scaling.freq_factors.size(),
                       " values, expected head_dim / 2 = ", head_dim / 2));
    }
    for (float f : rope_scaling.freq_factors) {
      if (!(f > 0) || !std::isfinite(f)) {
        return absl::InvalidArgumentError(
            absl::StrCat("RoPE frequency factors must be positive and finite, got ", f));
      }
    }
  }
  if (sliding_window.has_value()) {
    KVFOLD_RETURN_IF_ERROR(positive("sliding_window", *sliding_window));
  }
  if (sliding_window_start_layer < 0) {
    return absl::InvalidArgumentError("max_window_layers must not be negative");
  }
  auto token_in_vocab = [this](const char* name, int id) -> absl::Status {
    if (id >= 0 && id < vocab_size) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(name, " ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
  };
  if (bos_token_id.has_value()) {
    KVFOLD_RETURN_IF_ERROR(token_in_vocab("bos_token_id", *bos_token_id));
  }
  for (int id : eos_token_ids) KVFOLD_RETURN_IF_ERROR(token_in_vocab("eos_token_id", id));
  return absl::OkStatus();
}

int ModelConfig::MaxContext() const {
  if (sliding_window.has_value() && sliding_window_start_layer < num_layers) {
    return std::min(max_position_embeddings, *sliding_window);
  }
  return max_position_embeddings;
}

}  // namespace kvfold
