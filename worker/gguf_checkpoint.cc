#include "worker/gguf_checkpoint.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

// Debian's Abseil predates absl::string_view aliasing std::string_view; convert at the seams.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr int64_t kBlock = 32;  // values per Q8_0/Q4_0/Q4_1 block

struct TypeInfo {
  const char* name;
  int64_t block_values;  // 1 for plain types
  int64_t block_bytes;
};

std::optional<TypeInfo> InfoOf(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32:
      return TypeInfo{"F32", 1, 4};
    case GgmlType::kF16:
      return TypeInfo{"F16", 1, 2};
    case GgmlType::kBF16:
      return TypeInfo{"BF16", 1, 2};
    case GgmlType::kQ8_0:
      return TypeInfo{"Q8_0", kBlock, 34};
    case GgmlType::kQ4_0:
      return TypeInfo{"Q4_0", kBlock, 18};
    case GgmlType::kQ4_1:
      return TypeInfo{"Q4_1", kBlock, 20};
  }
  return std::nullopt;
}

DType ToDType(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return DType::kF32;
    case GgmlType::kF16:
      return DType::kF16;
    case GgmlType::kBF16:
      return DType::kBF16;
    case GgmlType::kQ8_0:
      return DType::kQ8_0;
    case GgmlType::kQ4_0:
      return DType::kQ4_0;
    case GgmlType::kQ4_1:
      return DType::kQ4_1;
  }
  LOG(FATAL) << "unchecked ggml type " << static_cast<uint32_t>(type);
}

// llama.cpp's converter interleaves each head's two RoPE halves (HF -> GGUF is
// reshape(n_head, 2, rows_per_head / 2, cols).swapaxes(1, 2)); the HF row r reads GGUF row
// SourceRow(r).
int64_t SourceRow(int64_t r, int64_t rows_per_head) {
  const int64_t head = r / rows_per_head, within = r % rows_per_head, half = rows_per_head / 2;
  const int64_t j = within / half, i = within % half;
  return head * rows_per_head + 2 * i + j;
}

absl::StatusOr<double> GetNumber(const GgufFile& file, std::string_view key, double fallback) {
  const GgufValue* v = file.Find(key);
  if (v == nullptr) return fallback;
  if (const double* d = std::get_if<double>(&v->value)) return *d;
  if (const int64_t* i = std::get_if<int64_t>(&v->value)) return static_cast<double>(*i);
  if (const uint64_t* u = std::get_if<uint64_t>(&v->value)) return static_cast<double>(*u);
  return absl::InvalidArgumentError(absl::StrFormat("%s: GGUF metadata \"%s\" is %s, not a number",
                                                    file.path(), key, GgufTypeName(v->type)));
}

// An integer that fits an int; `fallback` when absent, unless required.
absl::StatusOr<int> GetInt(const GgufFile& file, std::string_view key,
                           std::optional<int> fallback) {
  if (file.Find(key) == nullptr && fallback.has_value()) return *fallback;
  KVFOLD_ASSIGN_OR_RETURN(const uint64_t value, file.GetUint(key));
  if (value > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: GGUF metadata \"%s\" = %d is too large", file.path(), key, value));
  }
  return static_cast<int>(value);
}

// A tensor's bytes in the mapping, checked: a supported type, 1-D or 2-D, whole blocks per row,
// inside the tensor data section.
struct RawTensor {
  TypeInfo type;
  uint64_t rows = 0, cols = 0, row_bytes = 0;
  const char* src = nullptr;
};

absl::StatusOr<RawTensor> Locate(const GgufTensorInfo& info, std::string_view data,
                                 const std::string& what) {
  const std::optional<TypeInfo> type = InfoOf(info.ggml_type);
  if (!type.has_value()) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s has ggml type %d, which is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1 are)", what,
        info.ggml_type));
  }
  if (info.dims.empty() || info.dims.size() > 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has %d dimensions, expected 1 or 2", what, info.dims.size()));
  }
  constexpr uint64_t kMaxDim = uint64_t{1} << 31;
  const uint64_t cols = info.dims[0], rows = info.dims.size() == 2 ? info.dims[1] : 1;
  if (cols == 0 || rows == 0 || cols >= kMaxDim || rows >= kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has dimensions [%s]", what, absl::StrJoin(info.dims, ", ")));
  }
  if (cols % type->block_values != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %s rows of %d values are not whole %d-value blocks", what, type->name,
                        cols, type->block_values));
  }
  const uint64_t row_bytes = cols / type->block_values * type->block_bytes;
  if (info.offset > data.size() || rows * row_bytes > data.size() - info.offset) {
    return absl::OutOfRangeError(absl::StrFormat(
        "%s: its %d bytes at offset %d run past the end of the file's tensor data (%d bytes)", what,
        rows * row_bytes, info.offset, data.size()));
  }
  return RawTensor{*type, rows, cols, row_bytes, data.data() + info.offset};
}

}  // namespace

std::optional<std::string> HfTensorName(std::string_view gguf_name) {
  static const std::pair<const char*, const char*> kGlobal[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  for (const auto& [from, to] : kGlobal) {
    if (gguf_name == from) return std::string(to);
  }
  static const std::pair<const char*, const char*> kLayer[] = {
      {"attn_norm", "input_layernorm"},    {"attn_q", "self_attn.q_proj"},
      {"attn_k", "self_attn.k_proj"},      {"attn_v", "self_attn.v_proj"},
      {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},
  };
  if (!gguf_name.starts_with("blk.")) return std::nullopt;
  const std::string_view rest = gguf_name.substr(4);
  const size_t dot = rest.find('.');
  int layer = 0;
  if (dot == std::string_view::npos || !absl::SimpleAtoi(Sv(rest.substr(0, dot)), &layer) ||
      layer < 0) {
    return std::nullopt;
  }
  const std::string_view leaf = rest.substr(dot + 1);  // "attn_q.weight"
  const size_t leaf_dot = leaf.rfind('.');
  if (leaf_dot == std::string_view::npos) return std::nullopt;
  const std::string_view stem = leaf.substr(0, leaf_dot), suffix = leaf.substr(leaf_dot);
  for (const auto& [from, to] : kLayer) {
    if (stem == from) return absl::StrCat("model.layers.", layer, ".", to, Sv(suffix));
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<GgufCheckpoint>> GgufCheckpoint::Open(const std::string& path) {
  auto checkpoint = absl::WrapUnique(new GgufCheckpoint());
  KVFOLD_ASSIGN_OR_RETURN(checkpoint->file_, GgufFile::Open(path));
  KVFOLD_RETURN_IF_ERROR(checkpoint->LoadConfig());
  KVFOLD_RETURN_IF_ERROR(checkpoint->LoadTensors());
  VLOG(1) << "Opened GGUF " << path << ": " << checkpoint->tensors_.size() << " tensors";
  return checkpoint;
}

absl::Status GgufCheckpoint::LoadConfig() {
  const GgufFile& f = *file_;
  KVFOLD_ASSIGN_OR_RETURN(const std::string arch, f.GetString("general.architecture"));
  if (arch != "llama") {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: architecture \"%s\" is not supported (only \"llama\")", f.path(), arch));
  }
  ModelConfig& c = config_;
  c.architecture = "LlamaForCausalLM";
  KVFOLD_ASSIGN_OR_RETURN(c.hidden_size, GetInt(f, "llama.embedding_length", std::nullopt));
  KVFOLD_ASSIGN_OR_RETURN(c.num_layers, GetInt(f, "llama.block_count", std::nullopt));
  KVFOLD_ASSIGN_OR_RETURN(c.intermediate_size,
                          GetInt(f, "llama.feed_forward_length", std::nullopt));
  KVFOLD_ASSIGN_OR_RETURN(c.num_heads, GetInt(f, "llama.attention.head_count", std::nullopt));
  KVFOLD_ASSIGN_OR_RETURN(c.num_kv_heads, GetInt(f, "llama.attention.head_count_kv", c.num_heads));
  const int default_head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  KVFOLD_ASSIGN_OR_RETURN(c.head_dim, GetInt(f, "llama.attention.key_length", default_head_dim));
  KVFOLD_ASSIGN_OR_RETURN(c.max_position_embeddings, GetInt(f, "llama.context_length", 2048));
  KVFOLD_ASSIGN_OR_RETURN(c.rms_norm_eps,
                          GetNumber(f, "llama.attention.layer_norm_rms_epsilon", 1e-5));
  KVFOLD_ASSIGN_OR_RETURN(c.rope_theta, GetNumber(f, "llama.rope.freq_base", 10000.0));
  if (f.Find("llama.rope.scaling.type") != nullptr) {
    KVFOLD_ASSIGN_OR_RETURN(const std::string type, f.GetString("llama.rope.scaling.type"));
    if (type == "linear") {
      c.rope_scaling.type = RopeScaling::Type::kLinear;
      KVFOLD_ASSIGN_OR_RETURN(c.rope_scaling.factor, GetNumber(f, "llama.rope.scaling.factor", 1));
    } else if (type != "none") {
      return absl::UnimplementedError(
          absl::StrFormat("%s: RoPE scaling \"%s\" is not supported", f.path(), type));
    }
  }
  if (f.Find("tokenizer.ggml.bos_token_id") != nullptr) {
    KVFOLD_ASSIGN_OR_RETURN(c.bos_token_id, GetInt(f, "tokenizer.ggml.bos_token_id", 0));
  }
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    if (f.Find(key) == nullptr) continue;
    KVFOLD_ASSIGN_OR_RETURN(const int id, GetInt(f, key, 0));
    if (c.eos_token_ids.empty() || c.eos_token_ids[0] != id) c.eos_token_ids.push_back(id);
  }
  if (f.Find("tokenizer.chat_template") != nullptr) {
    KVFOLD_ASSIGN_OR_RETURN(chat_template_, f.GetString("tokenizer.chat_template"));
  }
  return absl::OkStatus();
}

absl::Status GgufCheckpoint::LoadTensors() {
  const GgufHeader& header = file_->header();
  for (const GgufTensorInfo& info : header.tensors) {
    if (info.name == "rope_freqs.weight") {
      KVFOLD_RETURN_IF_ERROR(LoadRopeFreqFactors(info));
      continue;
    }
    std::optional<std::string> hf = HfTensorName(info.name);
    if (!hf.has_value()) {
      LOG(WARNING) << file_->path() << ": ignoring tensor " << info.name;
      continue;
    }
    KVFOLD_ASSIGN_OR_RETURN(tensors_[*hf], Describe(info, *hf));
  }
  ModelConfig& c = config_;
  auto embed = tensors_.find("model.embed_tokens.weight");
  if (embed == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(file_->path(), ": no tensor token_embd.weight"));
  }
  c.vocab_size = static_cast<int>(embed->second.view.rows);
  c.tie_word_embeddings = !tensors_.contains("lm_head.weight");
  absl::Status valid = c.Validate();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file_->path(), ": ", valid.message()));
  }
  return absl::OkStatus();
}

// llama.cpp's converter writes Llama 3 RoPE scaling as head_dim / 2 F32 factors (not metadata);
// llama.cpp divides each frequency by its factor, which gives Hugging Face's llama3 table.
absl::Status GgufCheckpoint::LoadRopeFreqFactors(const GgufTensorInfo& info) {
  const std::string what = absl::StrFormat("%s: tensor %s", file_->path(), info.name);
  KVFOLD_ASSIGN_OR_RETURN(const RawTensor raw, Locate(info, file_->tensor_data(), what));
  const int expected = config_.head_dim / 2;
  if (static_cast<GgmlType>(info.ggml_type) != GgmlType::kF32 || raw.rows != 1 ||
      raw.cols != static_cast<uint64_t>(expected)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: expected %d F32 values (head_dim / 2), got %s [%s]", what, expected,
                        raw.type.name, absl::StrJoin(info.dims, ", ")));
  }
  std::vector<float>& factors = config_.rope_scaling.freq_factors;
  factors.resize(expected);
  std::memcpy(factors.data(), raw.src, expected * sizeof(float));
  return absl::OkStatus();
}

absl::StatusOr<GgufCheckpoint::Entry> GgufCheckpoint::Describe(const GgufTensorInfo& info,
                                                               std::string_view hf_name) {
  const std::string what = absl::StrFormat("%s: tensor %s", file_->path(), info.name);
  KVFOLD_ASSIGN_OR_RETURN(const RawTensor raw, Locate(info, file_->tensor_data(), what));
  const uint64_t rows = raw.rows, cols = raw.cols;
  Entry e{info.name, info.dims, {}, 0, false};
  if (hf_name.ends_with("q_proj.weight") || hf_name.ends_with("k_proj.weight")) {
    const int heads = hf_name.ends_with("q_proj.weight") ? config_.num_heads : config_.num_kv_heads;
    if (heads <= 0 || rows % heads != 0 || (rows / heads) % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %d rows do not split into %d heads of even size", what, rows, heads));
    }
    e.rows_per_head = static_cast<int64_t>(rows / heads);
  }
  // Every type is served natively (the kernels read llama.cpp's quantized blocks as they are);
  // only permuted Q/K rows, or rows the mapping leaves misaligned, are copied (by GetRows).
  const DType dtype = ToDType(static_cast<GgmlType>(info.ggml_type));
  CHECK_EQ(RowBytes(dtype, static_cast<int64_t>(cols)), raw.row_bytes);
  const size_t alignment = dtype == DType::kF32 ? 4 : 2;
  const bool aligned = reinterpret_cast<uintptr_t>(raw.src) % alignment == 0;
  e.copy = e.rows_per_head > 0 || !aligned;
  e.view = TensorView{const_cast<char*>(raw.src), dtype, static_cast<int64_t>(rows),
                      static_cast<int64_t>(cols)};
  return e;
}

bool GgufCheckpoint::Has(std::string_view name) const { return tensors_.contains(Sv(name)); }

absl::StatusOr<TensorView> GgufCheckpoint::Get(std::string_view name, int64_t rows,
                                               int64_t cols) const {
  return GetRows(name, rows, cols, 0, rows);
}

absl::StatusOr<TensorView> GgufCheckpoint::GetRows(std::string_view name, int64_t rows,
                                                   int64_t cols, int64_t begin,
                                                   int64_t count) const {
  auto it = tensors_.find(Sv(name));
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor ", Sv(name), " not found in ", file_->path()));
  }
  const Entry& e = it->second;
  if (e.view.rows != rows || e.view.cols != cols) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: tensor %s (%s) has ggml dimensions [%s], expected %d rows x %d columns", file_->path(),
        e.gguf_name, name, absl::StrJoin(e.dims, ", "), rows, cols));
  }
  CHECK(begin >= 0 && count >= 0 && begin + count <= rows) << "rows out of range";
  if (!e.copy) return e.view.Rows(begin, count);
  const std::string key = absl::StrCat(Sv(name), "#", begin, "+", count);
  const size_t row_bytes = e.view.row_bytes();
  std::lock_guard<std::mutex> lock(copies_mu_);
  std::unique_ptr<char[]>& copy = copies_[key];
  if (copy == nullptr) {
    copy = std::make_unique<char[]>(std::max<size_t>(1, count * row_bytes));
    const char* src = static_cast<const char*>(e.view.data);
    for (int64_t r = 0; r < count; ++r) {
      const int64_t s = e.rows_per_head > 0 ? SourceRow(begin + r, e.rows_per_head) : begin + r;
      std::memcpy(copy.get() + r * row_bytes, src + s * row_bytes, row_bytes);
    }
  }
  return TensorView{copy.get(), e.view.dtype, count, cols};
}

}  // namespace kvfold
