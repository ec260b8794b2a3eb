// MatMul staging kernels: activations into the GEMM's input dtype with zero padding, and the
// copy-out of GEMM results with the bias added.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/launch_utils.cuh"

namespace kvfold::cuda {
namespace {

template <typename T>
__device__ __forceinline__ T FromFloat(float value);
template <>
__device__ __forceinline__ float FromFloat<float>(float value) {
  return value;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float value) {
  return __float2half_rn(value);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

template <typename T>
__global__ void ConvertPadRowsKernel(const float* x, int64_t valid, int64_t total, T* dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = FromFloat<T>(i < valid ? x[i] : 0.0f);
  }
}

__global__ void CopyAddBiasKernel(const float* src, const float* bias, int64_t numel, int64_t cols,
                                  float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = bias == nullptr ? src[i] : src[i] + bias[i % cols];
  }
}

}  // namespace

void LaunchConvertPadRows(const float* x, int64_t rows, int64_t padded_rows, int64_t cols,
                          DType dst_dtype, void* dst, cudaStream_t stream) {
  const int64_t valid = rows * cols;
  const int64_t total = padded_rows * cols;
  if (total == 0) return;
  const unsigned int blocks = GridStrideBlocks(total);
  switch (dst_dtype) {
    case DType::kF32:
      ConvertPadRowsKernel<<<blocks, kElementwiseThreads, 0, stream>>>(x, valid, total,
                                                                       static_cast<float*>(dst));
      break;
    case DType::kF16:
      ConvertPadRowsKernel<<<blocks, kElementwiseThreads, 0, stream>>>(x, valid, total,
                                                                       static_cast<__half*>(dst));
      break;
    case DType::kBF16:
      ConvertPadRowsKernel<<<blocks, kElementwiseThreads, 0, stream>>>(
          x, valid, total, static_cast<__nv_bfloat16*>(dst));
      break;
    default:  // quantized weights: CudaOps::MatMul rejects them before staging
      break;
  }
  KVFOLD_CUDA_CHECK_LAUNCH();
}

void LaunchCopyAddBias(const float* src, const float* bias, int64_t rows, int64_t cols, float* out,
                       cudaStream_t stream) {
  const int64_t numel = rows * cols;
  if (numel == 0) return;
  CopyAddBiasKernel<<<GridStrideBlocks(numel), kElementwiseThreads, 0, stream>>>(src, bias, numel,
                                                                                 cols, out);
  KVFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace kvfold::cuda
