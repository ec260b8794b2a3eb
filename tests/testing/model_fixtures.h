// Loading models and reading golden files in tests: one copy for every test that needs them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "worker/llama_model.h"
#include "worker/model_loader.h"
#include "worker/safetensors.h"

namespace kvfold::testing {

// A model folder or .gguf file loaded onto `ops`.
inline absl::StatusOr<std::unique_ptr<LlamaModel>> LoadModel(const std::string& path, Ops& ops) {
  absl::StatusOr<std::unique_ptr<WeightSource>> weights = OpenWeights(path);
  if (!weights.ok()) return weights.status();
  return LlamaModel::Load(*std::move(weights), ops);
}

// A golden file's F32 tensor `name`, flattened; a test failure (and nothing) if it is missing.
inline std::vector<float> GoldenFloats(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsTensor* t = f.Find(name);
  if (t == nullptr || t->dtype != DType::kF32) {
    ADD_FAILURE() << name << " missing or not F32 in " << f.path();
    return {};
  }
  const float* p = static_cast<const float*>(t->data);
  return std::vector<float>(p, p + t->nbytes / sizeof(float));
}

// Token ids, which golden files store as F32 (exact below 2^24).
inline std::vector<int32_t> GoldenIds(const SafetensorsFile& f, const std::string& name) {
  std::vector<int32_t> ids;
  for (float x : GoldenFloats(f, name)) ids.push_back(static_cast<int32_t>(x));
  return ids;
}

}  // namespace kvfold::testing
