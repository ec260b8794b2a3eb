#include "kernels/cuda/device_buffer.h"

#include <algorithm>

#include "kernels/cuda/cuda_check.h"

namespace kvfold::cuda {

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) {
    const cudaError_t status = cudaFree(data_);
    LOG_IF(ERROR, status != cudaSuccess && status != cudaErrorCudartUnloading)
        << "cudaFree: " << cudaGetErrorString(status);
  }
}

void* DeviceBuffer::Reserve(size_t bytes, cudaStream_t stream) {
  if (bytes <= capacity_) return data_;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  KVFOLD_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  CHECK(capture == cudaStreamCaptureStatusNone)
      << "a device scratch buffer must grow during a step graph capture (run the same shapes "
         "eagerly before capturing)";
  // Doubling keeps regrowth (and its stream sync) rare when batches grow step by step.
  const size_t capacity = std::max(bytes, 2 * capacity_);
  if (data_ != nullptr) {
    KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream));
    KVFOLD_CUDA_CHECK(cudaFree(data_));
    data_ = nullptr;
    capacity_ = 0;
  }
  KVFOLD_CUDA_CHECK(cudaMalloc(&data_, capacity));
  capacity_ = capacity;
  return data_;
}

}  // namespace kvfold::cuda
