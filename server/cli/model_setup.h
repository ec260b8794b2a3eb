// Loading the model every model-running command serves (generate, serve): the ops of --device,
// the weights under --attention-plan (uploaded to a GPU's memory), and the tokenizer.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "server/cli/device_setup.h"
#include "server/tokenizer/tokenizer.h"
#include "worker/llama_model.h"
#include "worker/tensor_parallel.h"

namespace kvfold::cli {

struct LoadedModel {
  std::unique_ptr<Ops> ops;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  // On a GPU: samples on the device (ServingOptions::device_sampler); null on the CPU.
  std::unique_ptr<DeviceSampler> sampler;
  Device device = Device::kCpu;
  int cuda_ordinal = 0;
  int64_t weight_bytes = 0;  // on a GPU: the device memory the weights took
};

// Where one rank's model runs (TensorParallelGroup::PlaceModel fills it under tensor parallelism).
struct ModelPlacement {
  TensorParallel tp;  // this rank's shard
  Device device = Device::kCpu;
  int cuda_ordinal = 0;  // --device cuda: the GPU this rank drives
  // When set (tensor parallelism on GPUs): makes the model's communicator once the ops exist, as
  // NCCL orders its collectives on the ops' stream; it replaces tp.comm.
  std::function<absl::StatusOr<Communicator*>(Ops&)> device_comm;
};

// `path` is a model folder or a GGUF file; `threads` sizes the CPU backend (0: all cores). Under
// tensor parallelism the model is this rank's shard, and only the leader (rank 0) loads the
// tokenizer: a follower only runs the leader's steps.
absl::StatusOr<LoadedModel> LoadModel(const std::string& path, int threads,
                                      ModelPlacement placement = {});

}  // namespace kvfold::cli
