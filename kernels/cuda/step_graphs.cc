#include "kernels/cuda/step_graphs.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace kvfold::cuda {
namespace {

absl::Status CudaError(std::string_view what, cudaError_t e) {
  return absl::InternalError(
      absl::StrCat(std::string(what), ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

int64_t FreeDeviceBytes() {
  size_t free = 0, total = 0;
  KVFOLD_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return static_cast<int64_t>(free);
}

}  // namespace

absl::Status StepGraphs::Begin(int64_t key, cudaStream_t stream) {
  if (capturing_) return absl::FailedPreconditionError("a step graph capture is already running");
  if (const cudaError_t e = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
      e != cudaSuccess) {
    return CudaError("cudaStreamBeginCapture", e);
  }
  capturing_ = true;
  capture_key_ = key;
  return absl::OkStatus();
}

absl::Status StepGraphs::End(int64_t key, cudaStream_t stream) {
  if (!capturing_ || key != capture_key_) {
    return absl::FailedPreconditionError(absl::StrCat("no capture of step graph ", key));
  }
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  if (const cudaError_t e = cudaStreamEndCapture(stream, &graph); e != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    return CudaError("cudaStreamEndCapture", e);
  }
  if (Has(key)) {
    KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old graph may still be running
    Drop(key);
  }
  size_t nodes = 0;
  KVFOLD_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
  const int64_t free_before = FreeDeviceBytes();
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);  // the executable keeps what it needs
  if (e != cudaSuccess) return CudaError("cudaGraphInstantiate", e);
  // Upload now, so the first replay does not pay for it.
  KVFOLD_CUDA_CHECK(cudaGraphUpload(exec, stream));
  const int64_t used = free_before - FreeDeviceBytes();
  device_bytes_ += used;
  execs_.emplace(key, exec);
  LOG(INFO) << "step graph " << key << ": " << nodes << " nodes, " << used / 1024
            << " KiB device memory (" << execs_.size() << " graphs, " << device_bytes_ / 1024
            << " KiB in all)";
  return absl::OkStatus();
}

absl::Status StepGraphs::Replay(int64_t key, cudaStream_t stream) const {
  const auto it = execs_.find(key);
  if (it == execs_.end()) return absl::NotFoundError(absl::StrCat("no step graph ", key));
  if (const cudaError_t e = cudaGraphLaunch(it->second, stream); e != cudaSuccess) {
    return CudaError("cudaGraphLaunch", e);
  }
  return absl::OkStatus();
}

void StepGraphs::Drop(int64_t key) {
  const auto it = execs_.find(key);
  if (it == execs_.end()) return;
  KVFOLD_CUDA_CHECK(cudaGraphExecDestroy(it->second));
  execs_.erase(it);
}

void StepGraphs::DropAll() {
  for (auto& [key, exec] : execs_) cudaGraphExecDestroy(exec);
  execs_.clear();
  device_bytes_ = 0;
}

}  // namespace kvfold::cuda
