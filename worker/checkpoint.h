// A Hugging Face model folder: config.json (+ generation_config.json) and its weights, either
// model.safetensors or shards listed in model.safetensors.index.json. All memory-mapped.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/model_config.h"
#include "worker/safetensors.h"

namespace kvfold {

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }

  // The tensor `name` as a 2-D view (1-D tensors become [1, n]); an error naming the tensor and
  // its file if it is missing or its shape is not `rows` x `cols`.
  absl::StatusOr<TensorView> Get(std::string_view name, int64_t rows, int64_t cols) const;
  bool Has(std::string_view name) const;

 private:
  Checkpoint() = default;
  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace kvfold
