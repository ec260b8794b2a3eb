// A Hugging Face model folder: config.json (+ generation_config.json) and its weights, either
// model.safetensors or shards listed in model.safetensors.index.json. All memory-mapped read-only;
// weights are never written, though TensorView's `data` is non-const.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/model_config.h"
#include "worker/safetensors.h"
#include "worker/weight_source.h"

namespace kvfold {

class Checkpoint final : public WeightSource {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& location() const override { return dir_; }
  const ModelConfig& config() const override { return config_; }

  // The tensor `name` as a 2-D view (1-D tensors become [1, n]); an error naming the tensor and
  // its file if it is missing (NotFound), not 1-D or 2-D, or its shape is not `rows` x `cols`
  // (InvalidArgument). The view is aligned for its dtype and read-only: never write through it.
  absl::StatusOr<TensorView> Get(std::string_view name, int64_t rows, int64_t cols) const override;
  bool Has(std::string_view name) const override;

 private:
  struct Entry {
    const SafetensorsTensor* tensor;
    const SafetensorsFile* file;
  };

  Checkpoint() = default;
  absl::Status LoadConfig();
  absl::Status LoadSingleFile(const std::string& path);
  absl::Status LoadShards(const std::string& index_path);
  absl::StatusOr<const SafetensorsFile*> OpenShard(const std::string& path);
  absl::Status AddTensors(const SafetensorsFile& file);

  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, Entry> tensors_;  // points into files_
};

}  // namespace kvfold
