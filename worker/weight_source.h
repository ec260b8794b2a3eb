// Where a model's configuration and weights come from: a Hugging Face folder (Checkpoint) now,
// a GGUF file later. Weights are named as in Hugging Face's Llama layout
// ("model.layers.0.self_attn.q_proj.weight"); a source in another layout maps its names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/model_config.h"

namespace kvfold {

class WeightSource {
 public:
  virtual ~WeightSource() = default;

  virtual const ModelConfig& config() const = 0;
  // Where the weights come from, for error messages (a folder or file path).
  virtual const std::string& location() const = 0;
  // The tensor `name` as a host view of `rows` x `cols` (1-D tensors are [1, n]); an error
  // naming the tensor and its file if it is missing or shaped otherwise. The view lives as
  // long as the source.
  virtual absl::StatusOr<TensorView> Get(std::string_view name, int64_t rows,
                                         int64_t cols) const = 0;
  // Rows [begin, begin + count) of the tensor `name` (checked as Get checks it): what one
  // tensor-parallel rank loads. A source that must copy a tensor to serve it (GGUF's permuted
  // Q/K rows) copies only these rows.
  virtual absl::StatusOr<TensorView> GetRows(std::string_view name, int64_t rows, int64_t cols,
                                             int64_t begin, int64_t count) const {
    absl::StatusOr<TensorView> whole = Get(name, rows, cols);
    if (!whole.ok()) return whole;
    return whole->Rows(begin, count);
  }
  virtual bool Has(std::string_view name) const = 0;
};

}  // namespace kvfold
