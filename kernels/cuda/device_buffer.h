// A grow-only device allocation that one stream reuses across calls (op arguments, MatMul staging).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace kvfold::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // At least `bytes` bytes (256-byte aligned, contents unspecified). Growing first waits for
  // `stream`: work queued on it may still read the old allocation.
  // CHECK-fails when it would grow while `stream` is being captured (a step graph: growing
  // synchronises and frees memory the graph would read).
  void* Reserve(size_t bytes, cudaStream_t stream);
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace kvfold::cuda
