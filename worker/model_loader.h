// One entry point for every command's --model: a Hugging Face model folder or a .gguf file.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/weight_source.h"

namespace kvfold {

// True when `path` names a GGUF file (by its extension; the loader checks the magic).
bool IsGgufPath(const std::string& path);

// Opens `path` as a GgufCheckpoint (a .gguf file) or a Checkpoint (a folder).
absl::StatusOr<std::unique_ptr<WeightSource>> OpenWeights(const std::string& path);

}  // namespace kvfold
