// Row-wise and element-wise kernels: Embedding, RmsNorm, SiluMul, Add, GatherRows.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/launch_utils.cuh"

namespace kvfold::cuda {
namespace {

constexpr int kRowThreads = 256;

// One block per token.
template <typename T>
__global__ void EmbeddingKernel(const int32_t* token_ids, const T* table, int64_t cols,
                                float* out) {
  const int64_t row = blockIdx.x;
  const T* src = table + static_cast<int64_t>(token_ids[row]) * cols;
  float* dst = out + row * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = LoadAsFloat(src, c);
}

// One block per row. Reads all of the row before writing it, so out may alias x.
__global__ void RmsNormKernel(const float* x, const float* weight, float eps, int64_t cols,
                              float* out) {
  __shared__ float scratch[kRowThreads / kWarpSize];
  const float* src = x + static_cast<int64_t>(blockIdx.x) * cols;
  float* dst = out + static_cast<int64_t>(blockIdx.x) * cols;
  float sum_sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum_sq += src[c] * src[c];
  sum_sq = BlockSum(sum_sq, scratch);
  // 1 / sqrtf rather than rsqrtf: IEEE-rounded, like the CPU reference.
  const float inv_rms = 1.0f / sqrtf(sum_sq / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c] * inv_rms * weight[c];
}

__global__ void SiluMulKernel(const float* gate, const float* up, int64_t numel, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    // expf, not __expf: full precision.
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddKernel(float* x, const float* y, int64_t numel) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] += y[i];
  }
}

// One block per output row; copies words of type W.
template <typename W>
__global__ void GatherRowsKernel(const W* x, const int32_t* rows, int64_t row_words, W* out) {
  const W* src = x + static_cast<int64_t>(rows[blockIdx.x]) * row_words;
  W* dst = out + static_cast<int64_t>(blockIdx.x) * row_words;
  for (int64_t c = threadIdx.x; c < row_words; c += blockDim.x) dst[c] = src[c];
}

}  // namespace

void LaunchEmbedding(const int32_t* token_ids, int64_t num_tokens, const void* table,
                     DType table_dtype, int64_t cols, float* out, cudaStream_t stream) {
  if (num_tokens == 0 || cols == 0) return;
  const dim3 grid(static_cast<unsigned int>(num_tokens));
  switch (table_dtype) {
    case DType::kF32:
      EmbeddingKernel<<<grid, kRowThreads, 0, stream>>>(token_ids, static_cast<const float*>(table),
                                                        cols, out);
      break;
    case DType::kF16:
      EmbeddingKernel<<<grid, kRowThreads, 0, stream>>>(
          token_ids, static_cast<const __half*>(table), cols, out);
      break;
    case DType::kBF16:
      EmbeddingKernel<<<grid, kRowThreads, 0, stream>>>(
          token_ids, static_cast<const __nv_bfloat16*>(table), cols, out);
      break;
    default:  // quantized tables: CudaOps::Embedding rejects them before launch
      break;
  }
  KVFOLD_CUDA_CHECK_LAUNCH();
}

void LaunchRmsNorm(const float* x, const float* weight, float eps, int64_t rows, int64_t cols,
                   float* out, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  RmsNormKernel<<<static_cast<unsigned int>(rows), kRowThreads, 0, stream>>>(x, weight, eps, cols,
                                                                             out);
  KVFOLD_CUDA_CHECK_LAUNCH();
}

void LaunchSiluMul(const float* gate, const float* up, int64_t numel, float* out,
                   cudaStream_t stream) {
  if (numel == 0) return;
  SiluMulKernel<<<GridStrideBlocks(numel), kElementwiseThreads, 0, stream>>>(gate, up, numel, out);
  KVFOLD_CUDA_CHECK_LAUNCH();
}

void LaunchAdd(float* x, const float* y, int64_t numel, cudaStream_t stream) {
  if (numel == 0) return;
  AddKernel<<<GridStrideBlocks(numel), kElementwiseThreads, 0, stream>>>(x, y, numel);
  KVFOLD_CUDA_CHECK_LAUNCH();
}

void LaunchGatherRows(const void* x, const int32_t* rows, int64_t num_rows, int64_t row_bytes,
                      void* out, cudaStream_t stream) {
  if (num_rows == 0 || row_bytes == 0) return;
  const dim3 grid(static_cast<unsigned int>(num_rows));
  const bool words_aligned = row_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 4 == 0 &&
                             reinterpret_cast<uintptr_t>(out) % 4 == 0;
  if (words_aligned) {
    GatherRowsKernel<<<grid, kRowThreads, 0, stream>>>(static_cast<const uint32_t*>(x), rows,
                                                       row_bytes / 4, static_cast<uint32_t*>(out));
  } else {
    GatherRowsKernel<<<grid, kRowThreads, 0, stream>>>(static_cast<const uint16_t*>(x), rows,
                                                       row_bytes / 2, static_cast<uint16_t*>(out));
  }
  KVFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace kvfold::cuda
