// Step graphs of the CUDA backend: a step's kernels recorded once by stream capture and replayed
// with one cudaGraphLaunch, keyed by the caller (LlamaModel: padded batch rows and block-table
// width). Inputs reach a replay through fixed device addresses (step_staging.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>

#include "absl/status/status.h"

namespace kvfold::cuda {

class StepGraphs {
 public:
  StepGraphs() = default;
  ~StepGraphs() { DropAll(); }
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Starts recording `stream` (thread-local capture mode: this thread may not call APIs that are
  // unsafe during capture, such as cudaMalloc or a synchronisation, which then fail loudly).
  absl::Status Begin(int64_t key, cudaStream_t stream);
  // Ends the recording and instantiates it as graph `key`; logs its nodes and device memory.
  absl::Status End(int64_t key, cudaStream_t stream);
  bool capturing() const { return capturing_; }
  bool Has(int64_t key) const { return execs_.count(key) > 0; }
  absl::Status Replay(int64_t key, cudaStream_t stream) const;
  // Callers make sure no launch of the graph is still running (synchronise the stream first).
  void Drop(int64_t key);
  void DropAll();

 private:
  std::map<int64_t, cudaGraphExec_t> execs_;
  bool capturing_ = false;
  int64_t capture_key_ = 0;
  int64_t device_bytes_ = 0;  // memory the instantiated graphs took, as cudaMemGetInfo saw it
};

}  // namespace kvfold::cuda
