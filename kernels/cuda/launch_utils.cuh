// Launch-shape helpers and dtype loads shared by the .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

namespace kvfold::cuda {

inline constexpr int kElementwiseThreads = 256;

// Blocks for a grid-stride loop over `numel` elements: enough to fill the device, capped so the
// grid size fits in any launch.
inline unsigned int GridStrideBlocks(int64_t numel) {
  constexpr int64_t kMaxBlocks = 65536;
  return static_cast<unsigned int>(
      std::min(kMaxBlocks, (numel + kElementwiseThreads - 1) / kElementwiseThreads));
}

// Element i of a weight array as F32; every conversion here is exact.
template <typename T>
__device__ __forceinline__ float LoadAsFloat(const T* data, int64_t i);
template <>
__device__ __forceinline__ float LoadAsFloat<float>(const float* data, int64_t i) {
  return data[i];
}
template <>
__device__ __forceinline__ float LoadAsFloat<__half>(const __half* data, int64_t i) {
  return __half2float(data[i]);
}
template <>
__device__ __forceinline__ float LoadAsFloat<__nv_bfloat16>(const __nv_bfloat16* data, int64_t i) {
  return __bfloat162float(data[i]);
}

}  // namespace kvfold::cuda
