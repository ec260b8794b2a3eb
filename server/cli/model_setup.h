// Loading the model every model-running command serves (generate, serve): the CPU ops, the
// weights under --attention-plan, and the tokenizer.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "server/tokenizer/tokenizer.h"
#include "worker/llama_model.h"
#include "worker/tensor_parallel.h"

namespace kvfold::cli {

struct LoadedModel {
  std::unique_ptr<Ops> ops;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// `path` is a model folder or a GGUF file; `threads` sizes the CPU backend (0: all cores). Under
// tensor parallelism the model is this rank's shard, and only the leader (rank 0) loads the
// tokenizer: a follower only runs the leader's steps.
absl::StatusOr<LoadedModel> LoadModel(const std::string& path, int threads, TensorParallel tp = {});

}  // namespace kvfold::cli
