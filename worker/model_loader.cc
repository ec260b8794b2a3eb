#include "worker/model_loader.h"

#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/checkpoint.h"
#include "worker/gguf_checkpoint.h"

namespace kvfold {

bool IsGgufPath(const std::string& path) {
  return std::filesystem::path(path).extension() == ".gguf";
}

absl::StatusOr<std::unique_ptr<WeightSource>> OpenWeights(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such model folder or .gguf file"));
  }
  if (std::filesystem::is_directory(path, ec)) {
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(path);
    if (!ckpt.ok()) return ckpt.status();
    return std::unique_ptr<WeightSource>(*std::move(ckpt));
  }
  if (!IsGgufPath(path)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a model is a Hugging Face folder or a .gguf file"));
  }
  absl::StatusOr<std::unique_ptr<GgufCheckpoint>> gguf = GgufCheckpoint::Open(path);
  if (!gguf.ok()) return gguf.status();
  return std::unique_ptr<WeightSource>(*std::move(gguf));
}

}  // namespace kvfold
