#include "kernels/cuda/constant_staging.h"

#include "kernels/cuda/cuda_check.h"

namespace kvfold::cuda {
namespace {
// A model has a few distinct head-group layouts (one per folded layer); more means a caller is
// passing per-step data here, which would grow without bound.
constexpr size_t kMaxCopies = 4096;
}  // namespace

ConstantStaging::~ConstantStaging() {
  for (auto& [bytes, device] : copies_) cudaFree(device);
}

const char* ConstantStaging::Get(const ArgPack& pack, cudaStream_t stream) {
  if (pack.size() == 0) return nullptr;
  std::string key(pack.data(), pack.size());
  if (auto it = copies_.find(key); it != copies_.end()) return static_cast<const char*>(it->second);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  KVFOLD_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  CHECK(capture == cudaStreamCaptureStatusNone)
      << "a step graph capture met op arguments no eager step has staged (run the same shapes "
         "eagerly before capturing)";
  CHECK_LT(copies_.size(), kMaxCopies) << "ConstantStaging: too many distinct constant arrays";
  void* device = nullptr;
  KVFOLD_CUDA_CHECK(cudaMalloc(&device, pack.size()));
  // A synchronous copy: `pack` is pageable and dies with the caller's op call.
  KVFOLD_CUDA_CHECK(
      cudaMemcpyAsync(device, pack.data(), pack.size(), cudaMemcpyHostToDevice, stream));
  KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream));
  bytes_ += pack.size();
  copies_.emplace(std::move(key), device);
  return static_cast<const char*>(device);
}

}  // namespace kvfold::cuda
