// A GGUF file (llama.cpp's format, architecture "llama") as a WeightSource: the ModelConfig comes
// from its metadata, tensors are renamed to Hugging Face's Llama layout, and Q/K rows are put back
// from llama.cpp's interleaved-RoPE order into Hugging Face's rotate-half order. A
// rope_freqs.weight tensor (llama.cpp's Llama 3 RoPE scaling) becomes
// ModelConfig::rope_scaling.freq_factors.
//
// Tensor types: F32/F16/BF16 are served as they are (views into the mapping, except permuted Q/K,
// which are copied); Q8_0/Q4_0/Q4_1 are dequantized to F32 at load, exactly (each value is
// scale * q (+ min) in F32, as the reference's dequantizer computes it), at 4 bytes per weight.
// TODO(kernels): when kernels/ops.h has DType kQ8_0/kQ4_0/kQ4_1 (llama.cpp block layouts), serve
// quantized matrices natively instead: the Q/K row permutation moves whole rows, so it applies to
// quantized rows unchanged (PermuteRows below already works on raw row bytes).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/gguf_metadata.h"
#include "worker/model_config.h"
#include "worker/weight_source.h"

namespace kvfold {

// ggml tensor type codes this loader reads.
enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8, kBF16 = 30 };

// The Hugging Face name of a llama.cpp tensor name ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"), or nullopt for a name with no counterpart.
std::optional<std::string> HfTensorName(std::string_view gguf_name);

class GgufCheckpoint final : public WeightSource {
 public:
  static absl::StatusOr<std::unique_ptr<GgufCheckpoint>> Open(const std::string& path);

  const std::string& location() const override { return file_->path(); }
  const ModelConfig& config() const override { return config_; }
  absl::StatusOr<TensorView> Get(std::string_view name, int64_t rows, int64_t cols) const override;
  // Copies (permuted Q/K rows, or rows the mapping leaves misaligned) are made here, on first
  // request, of the rows requested only, and kept for the life of the checkpoint.
  absl::StatusOr<TensorView> GetRows(std::string_view name, int64_t rows, int64_t cols,
                                     int64_t begin, int64_t count) const override;
  bool Has(std::string_view name) const override;

  // tokenizer.chat_template, when the file has one (for the server's chat endpoint).
  const std::optional<std::string>& chat_template() const { return chat_template_; }

 private:
  struct Entry {
    std::string gguf_name;
    std::vector<uint64_t> dims;  // ggml order
    TensorView view;             // in the mapping; rows = product of dims[1..], cols = dims[0]
    int64_t rows_per_head = 0;   // > 0: Q/K rows served permuted (see SourceRow)
    bool copy = false;           // served from a copy (permuted or misaligned)
  };

  GgufCheckpoint() = default;
  absl::Status LoadConfig();
  absl::Status LoadTensors();
  absl::Status LoadRopeFreqFactors(const GgufTensorInfo& info);
  absl::StatusOr<Entry> Describe(const GgufTensorInfo& info, std::string_view hf_name);

  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  std::optional<std::string> chat_template_;
  absl::flat_hash_map<std::string, Entry> tensors_;  // by Hugging Face name
  // Copies made by GetRows, by "name#begin+count"; guarded so that concurrent loads are safe.
  mutable std::mutex copies_mu_;
  mutable absl::flat_hash_map<std::string, std::unique_ptr<char[]>> copies_;
};

}  // namespace kvfold
