#include "worker/attention_plan.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/cpu/quant.h"
#include "nlohmann/json.hpp"
#include "worker/safetensors.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

using nlohmann::json;

constexpr int kPlanVersion = 1;

// Streaming SHA-256 (OpenSSL's EVP interface; the low-level SHA256_* calls are deprecated).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    CHECK(ctx_ != nullptr && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1);
  }
  void Update(const void* data, size_t n) { CHECK(EVP_DigestUpdate(ctx_.get(), data, n) == 1); }
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  std::string HexDigest() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    CHECK(EVP_DigestFinal_ex(ctx_.get(), digest, &len) == 1);
    std::string hex;
    for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
    return hex;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

std::string Str(std::string_view s) { return std::string(s); }

// Errors about one layer: "<source>: layer 3 (share): ...".
absl::Status LayerError(std::string_view source, int layer, std::string_view mode,
                        std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat(Str(source), ": layer ", layer, " (", Str(mode), "): ", Str(message)));
}

absl::Status CheckPermutation(const std::vector<int32_t>& align, int n, std::string_view source,
                              int layer) {
  if (static_cast<int>(align.size()) != n) {
    return LayerError(
        source, layer, "share",
        absl::StrFormat("'align' has %d entries; the model has %d query heads", align.size(), n));
  }
  std::vector<bool> seen(n, false);
  for (int32_t h : align) {
    if (h < 0 || h >= n || seen[h]) {
      return LayerError(source, layer, "share",
                        absl::StrFormat("'align' is not a permutation of the %d query heads "
                                        "(entry %d repeats or is out of range)",
                                        n, h));
    }
    seen[h] = true;
  }
  return absl::OkStatus();
}

absl::Status CheckStaticMap(const LayerPlan& l, const ModelConfig& c, int tp,
                            std::string_view source, int layer) {
  auto error = [&](std::string_view message) {
    return LayerError(source, layer, "cluster", message);
  };
  const int kv = c.num_kv_heads;
  if (l.clusters < 1 || l.clusters > kv) {
    return error(
        absl::StrFormat("'clusters' %d is outside [1, %d] (the model's KV heads)", l.clusters, kv));
  }
  if (l.window < 1) return error(absl::StrFormat("'window' %d must be >= 1", l.window));
  if (static_cast<int>(l.static_map.size()) != kv) {
    return error(absl::StrFormat("'static_map' has %d entries; the model has %d KV heads",
                                 l.static_map.size(), kv));
  }
  const int shard = kv / tp;
  int representatives = 0;
  for (int h = 0; h < kv; ++h) {
    const int32_t r = l.static_map[h];
    if (r < 0 || r >= kv) {
      return error(absl::StrFormat("'static_map'[%d] = %d is not a KV head", h, r));
    }
    if (l.static_map[r] != r) {
      return error(absl::StrFormat(
          "'static_map'[%d] = %d, but head %d is not its own representative", h, r, r));
    }
    if (r > h) {
      return error(absl::StrFormat(
          "'static_map'[%d] = %d: a representative must be its cluster's lowest head", h, r));
    }
    if (r / shard != h / shard) {
      return error(absl::StrFormat(
          "KV heads %d and %d share a cluster across tensor-parallel shards (%d ranks of %d KV "
          "heads)",
          r, h, tp, shard));
    }
    if (r == h) ++representatives;
  }
  if (representatives != l.clusters) {
    return error(absl::StrFormat("'static_map' has %d clusters; 'clusters' says %d",
                                 representatives, l.clusters));
  }
  return absl::OkStatus();
}

absl::Status CheckLayer(const AttentionPlan& plan, int i, const ModelConfig& c, int tp,
                        std::string_view source) {
  const LayerPlan& l = plan.layers[i];
  const std::string_view mode = AttentionModeName(l.mode);
  auto error = [&](std::string_view message) { return LayerError(source, i, mode, message); };
  switch (l.mode) {
    case AttentionMode::kFull:
      return absl::OkStatus();
    case AttentionMode::kShare:
      if (l.source < 0 || l.source >= i) {
        return error(absl::StrFormat("'from' %d is not an earlier layer", l.source));
      }
      if (plan.layers[l.source].mode != AttentionMode::kFull) {
        return error(absl::StrFormat("'from' %d is a %s layer; a share reads a full layer",
                                     l.source, Str(AttentionModeName(plan.layers[l.source].mode))));
      }
      if (l.align.empty()) return absl::OkStatus();
      KVFOLD_RETURN_IF_ERROR(CheckPermutation(l.align, c.num_heads, source, i));
      // A rank holds query heads [r·H/tp, (r+1)·H/tp): an alignment must stay within them.
      for (int h = 0; h < c.num_heads; ++h) {
        const int shard = c.num_heads / tp;
        if (l.align[h] / shard != h / shard) {
          return error(absl::StrFormat(
              "'align'[%d] = %d crosses tensor-parallel shards (%d ranks of %d query heads)", h,
              l.align[h], tp, shard));
        }
      }
      return absl::OkStatus();
    case AttentionMode::kCluster:
      return CheckStaticMap(l, c, tp, source, i);
    case AttentionMode::kDrop:
      if (!l.bias.empty() && static_cast<int>(l.bias.size()) != c.hidden_size) {
        return error(absl::StrFormat("the bias has %d values; the model's hidden size is %d",
                                     l.bias.size(), c.hidden_size));
      }
      return absl::OkStatus();
    case AttentionMode::kKvFrom:
      if (l.source < 0 || l.source >= i) {
        return error(absl::StrFormat("'from' %d is not an earlier layer", l.source));
      }
      if (plan.layers[l.source].mode != AttentionMode::kFull) {
        return error(absl::StrFormat("'from' %d is a %s layer, which stores no full K/V", l.source,
                                     Str(AttentionModeName(plan.layers[l.source].mode))));
      }
      return absl::OkStatus();
  }
  return error("unknown mode");
}

// ---- JSON parsing ----

bool IsInt32(const json& v) {
  return v.is_number_integer() && v.get<int64_t>() >= std::numeric_limits<int32_t>::min() &&
         v.get<int64_t>() <= std::numeric_limits<int32_t>::max();
}

absl::StatusOr<AttentionMode> ParseMode(const json& v) {
  if (!v.is_string()) return absl::InvalidArgumentError("'mode' must be a string");
  const std::string s = v.get<std::string>();
  for (AttentionMode m : {AttentionMode::kFull, AttentionMode::kShare, AttentionMode::kCluster,
                          AttentionMode::kDrop, AttentionMode::kKvFrom}) {
    if (s == AttentionModeName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown mode '", s, "' (expected full, share, cluster, drop or kv_from)"));
}

// The fields each mode takes besides "mode".
std::vector<std::string> ModeFields(AttentionMode m) {
  switch (m) {
    case AttentionMode::kFull:
      return {};
    case AttentionMode::kShare:
      return {"from", "align"};
    case AttentionMode::kCluster:
      return {"clusters", "window", "static_map"};
    case AttentionMode::kDrop:
      return {"bias"};
    case AttentionMode::kKvFrom:
      return {"from"};
  }
  return {};
}

absl::StatusOr<int32_t> IntField(const json& layer, std::string_view name, bool required,
                                 int32_t fallback) {
  auto it = layer.find(name);
  if (it == layer.end()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat("'", Str(name), "' is missing"));
    return fallback;
  }
  if (!IsInt32(*it)) {
    return absl::InvalidArgumentError(absl::StrCat("'", Str(name), "' must be an integer"));
  }
  return static_cast<int32_t>(it->get<int64_t>());
}

absl::StatusOr<std::vector<int32_t>> IntArrayField(const json& layer, std::string_view name,
                                                   bool required) {
  auto it = layer.find(name);
  if (it == layer.end()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat("'", Str(name), "' is missing"));
    return std::vector<int32_t>();
  }
  const std::string message = absl::StrCat("'", Str(name), "' must be an array of integers");
  if (!it->is_array()) return absl::InvalidArgumentError(message);
  std::vector<int32_t> out;
  for (const json& v : *it) {
    if (!IsInt32(v)) return absl::InvalidArgumentError(message);
    out.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return out;
}

// Reads "file.safetensors:tensor" (file relative to base_dir): hidden_size floats.
absl::StatusOr<std::vector<float>> ReadBias(const std::string& ref, const std::string& base_dir,
                                            int hidden_size) {
  const size_t colon = ref.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == ref.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'bias' must be \"FILE.safetensors:TENSOR\", not \"", ref, "\""));
  }
  std::filesystem::path file(ref.substr(0, colon));
  if (file.is_relative()) file = std::filesystem::path(base_dir) / file;
  const std::string tensor = ref.substr(colon + 1);
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(file));
  const SafetensorsTensor* t = f->Find(tensor);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("bias tensor '", tensor, "' is not in ", f->path()));
  }
  int64_t numel = 1;
  for (int64_t d : t->shape) numel *= d;
  const bool vector_shape = t->shape.size() == 1 || (t->shape.size() == 2 && t->shape[0] == 1);
  if (!vector_shape || numel != hidden_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bias tensor '%s' in %s has shape [%s]; the model's hidden size is %d",
                        tensor, f->path(), absl::StrJoin(t->shape, ", "), hidden_size));
  }
  std::vector<float> values(hidden_size);
  cpu::DequantizeRow(t->data, t->dtype, hidden_size, values.data());
  return values;
}

absl::StatusOr<LayerPlan> ParseLayer(const json& j, const std::string& base_dir,
                                     const ModelConfig& config) {
  if (!j.is_object()) return absl::InvalidArgumentError("must be a JSON object");
  auto mode_it = j.find("mode");
  if (mode_it == j.end()) return absl::InvalidArgumentError("'mode' is missing");
  LayerPlan l;
  KVFOLD_ASSIGN_OR_RETURN(l.mode, ParseMode(*mode_it));
  const std::vector<std::string> allowed = ModeFields(l.mode);
  for (const auto& [key, value] : j.items()) {
    if (key != "mode" && std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field '", key, "' for mode ", Str(AttentionModeName(l.mode)),
                       allowed.empty() ? "" : " (it takes ", absl::StrJoin(allowed, ", "),
                       allowed.empty() ? "" : ")"));
    }
  }
  if (l.mode == AttentionMode::kShare) {
    KVFOLD_ASSIGN_OR_RETURN(l.source, IntField(j, "from", true, -1));
    KVFOLD_ASSIGN_OR_RETURN(l.align, IntArrayField(j, "align", false));
  } else if (l.mode == AttentionMode::kCluster) {
    KVFOLD_ASSIGN_OR_RETURN(l.clusters, IntField(j, "clusters", true, 0));
    KVFOLD_ASSIGN_OR_RETURN(l.window, IntField(j, "window", false, 5));
    KVFOLD_ASSIGN_OR_RETURN(l.static_map, IntArrayField(j, "static_map", true));
  } else if (l.mode == AttentionMode::kKvFrom) {
    KVFOLD_ASSIGN_OR_RETURN(l.source, IntField(j, "from", true, -1));
  } else if (auto it = j.find("bias"); l.mode == AttentionMode::kDrop && it != j.end()) {
    if (!it->is_string()) {
      return absl::InvalidArgumentError("'bias' must be a string \"FILE.safetensors:TENSOR\"");
    }
    l.bias_tensor = it->get<std::string>();
    KVFOLD_ASSIGN_OR_RETURN(l.bias, ReadBias(l.bias_tensor, base_dir, config.hidden_size));
  }
  return l;
}

}  // namespace

std::string_view AttentionModeName(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::kFull:
      return "full";
    case AttentionMode::kShare:
      return "share";
    case AttentionMode::kCluster:
      return "cluster";
    case AttentionMode::kDrop:
      return "drop";
    case AttentionMode::kKvFrom:
      return "kv_from";
  }
  return "unknown";
}

bool AttentionPlan::folded() const {
  return std::any_of(layers.begin(), layers.end(),
                     [](const LayerPlan& l) { return l.mode != AttentionMode::kFull; });
}

uint64_t AttentionPlan::cache_salt() const {
  if (!folded()) return 0;
  // The first 64 bits of the plan's hash; a folded plan without an id (built in code) still
  // differs from the unfolded one.
  const std::string hex = id.empty() ? Sha256Hex(AttentionPlanToJson(*this)) : id;
  const uint64_t salt = std::strtoull(hex.substr(0, 16).c_str(), nullptr, 16);
  return salt == 0 ? 1 : salt;
}

AttentionPlan FullAttentionPlan(const ModelConfig& config) {
  AttentionPlan plan;
  plan.layers.resize(config.num_layers);
  return plan;
}

std::string Sha256Hex(std::string_view bytes) {
  Sha256 h;
  h.Update(bytes);
  return h.HexDigest();
}

absl::StatusOr<std::string> ModelFingerprint(const ModelConfig& c, const WeightSource& weights) {
  KVFOLD_ASSIGN_OR_RETURN(TensorView embedding,
                          weights.Get("model.embed_tokens.weight", c.vocab_size, c.hidden_size));
  Sha256 h;
  h.Update(absl::StrFormat(
      "kvfold model fingerprint v1: layers=%d hidden=%d heads=%d kv_heads=%d head_dim=%d "
      "intermediate=%d vocab=%d embedding_dtype=%s\n",
      c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size,
      c.vocab_size, Str(DTypeName(embedding.dtype))));
  h.Update(embedding.data, embedding.nbytes());
  return h.HexDigest();
}

absl::Status ValidateAttentionPlan(const AttentionPlan& plan, const ModelConfig& config, int tp,
                                   std::string_view source) {
  if (tp < 1 || config.num_kv_heads % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor-parallel size %d does not divide the model's %d KV heads", tp,
                        config.num_kv_heads));
  }
  if (static_cast<int>(plan.layers.size()) != config.num_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d layers; the model has %d", Str(source), plan.layers.size(), config.num_layers));
  }
  for (int i = 0; i < config.num_layers; ++i) {
    KVFOLD_RETURN_IF_ERROR(CheckLayer(plan, i, config, tp, source));
  }
  return absl::OkStatus();
}

absl::StatusOr<AttentionPlan> ParseAttentionPlan(std::string_view text, std::string_view source,
                                                 const std::string& base_dir,
                                                 const ModelConfig& config,
                                                 std::string_view model_fingerprint, int tp) {
  const std::string src = Str(source);
  auto error = [&src](std::string_view message) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": ", Str(message)));
  };
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return error("not valid JSON");
  if (!j.is_object()) return error("must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (key != "version" && key != "model_fingerprint" && key != "layers") {
      return error(absl::StrCat("unknown field '", key,
                                "' (a plan has version, model_fingerprint and layers)"));
    }
  }
  auto version = j.find("version");
  if (version == j.end() || !version->is_number_integer()) {
    return error("'version' must be an integer");
  }
  if (version->get<int64_t>() != kPlanVersion) {
    return error(absl::StrFormat("version %d is not supported (this kvfold reads version %d)",
                                 version->get<int64_t>(), kPlanVersion));
  }
  AttentionPlan plan;
  auto fingerprint = j.find("model_fingerprint");
  if (fingerprint == j.end() || !fingerprint->is_string()) {
    return error("'model_fingerprint' must be a string");
  }
  plan.model_fingerprint = fingerprint->get<std::string>();
  if (plan.model_fingerprint != model_fingerprint) {
    return error(absl::StrCat("the plan was calibrated for another model (fingerprint ",
                              plan.model_fingerprint, "; this model's is ", Str(model_fingerprint),
                              ")"));
  }
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) return error("'layers' must be an array");
  if (static_cast<int>(layers->size()) != config.num_layers) {
    return error(absl::StrFormat("%d layers; the model has %d", layers->size(), config.num_layers));
  }
  for (size_t i = 0; i < layers->size(); ++i) {
    absl::StatusOr<LayerPlan> layer = ParseLayer((*layers)[i], base_dir, config);
    if (!layer.ok()) {
      return absl::Status(
          layer.status().code(),
          absl::StrCat(src, ": layer ", i, ": ", std::string(layer.status().message())));
    }
    plan.layers.push_back(*std::move(layer));
  }
  KVFOLD_RETURN_IF_ERROR(ValidateAttentionPlan(plan, config, tp, source));
  plan.id = Sha256Hex(text);
  return plan;
}

absl::StatusOr<AttentionPlan> LoadAttentionPlan(const std::string& path, const ModelConfig& config,
                                                std::string_view model_fingerprint, int tp) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read attention plan ", path));
  std::stringstream text;
  text << in.rdbuf();
  const std::string base_dir = std::filesystem::path(path).parent_path().string();
  return ParseAttentionPlan(text.str(), path, base_dir.empty() ? "." : base_dir, config,
                            model_fingerprint, tp);
}

std::string AttentionPlanToJson(const AttentionPlan& plan) {
  // One layer per line: readable, and diffs between plans show the layers that changed.
  std::string out = absl::StrCat("{\n  \"version\": ", kPlanVersion, ",\n  \"model_fingerprint\": ",
                                 json(plan.model_fingerprint).dump(), ",\n  \"layers\": [");
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const LayerPlan& l = plan.layers[i];
    nlohmann::ordered_json layer;
    layer["mode"] = Str(AttentionModeName(l.mode));
    switch (l.mode) {
      case AttentionMode::kFull:
        break;
      case AttentionMode::kShare:
        layer["from"] = l.source;
        if (!l.align.empty()) layer["align"] = l.align;
        break;
      case AttentionMode::kCluster:
        layer["clusters"] = l.clusters;
        layer["window"] = l.window;
        layer["static_map"] = l.static_map;
        break;
      case AttentionMode::kDrop:
        if (!l.bias_tensor.empty()) layer["bias"] = l.bias_tensor;
        break;
      case AttentionMode::kKvFrom:
        layer["from"] = l.source;
        break;
    }
    absl::StrAppend(&out, i == 0 ? "\n    " : ",\n    ", layer.dump());
  }
  absl::StrAppend(&out, "\n  ]\n}\n");
  return out;
}

}  // namespace kvfold
