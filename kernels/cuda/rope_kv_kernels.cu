// Kernels that place tokens: RoPE rotation by position, and K/V writes into cache slots.
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"

namespace kvfold::cuda {
namespace {

constexpr int kRowThreads = 128;

// One block per token; each thread rotates pairs (i, i + head_dim / 2) of every head.
__global__ void RopeKernel(float* x, int num_heads, int head_dim, const int32_t* positions,
                           const float* table) {
  const int half = head_dim / 2;
  const int64_t token = blockIdx.x;
  float* row = x + token * num_heads * head_dim;
  const float* cos_sin = table + static_cast<int64_t>(positions[token]) * head_dim;
  for (int p = threadIdx.x; p < num_heads * half; p += blockDim.x) {
    const int head = p / half;
    const int i = p % half;
    float* h = row + head * head_dim;
    const float cos = cos_sin[i];
    const float sin = cos_sin[half + i];
    const float a = h[i];
    const float b = h[i + half];
    h[i] = a * cos - b * sin;
    h[i + half] = b * cos + a * sin;
  }
}

__device__ __forceinline__ void StoreAs(float x, float* dst) { *dst = x; }
__device__ __forceinline__ void StoreAs(float x, __nv_bfloat16* dst) {
  *dst = __float2bfloat16_rn(x);  // round to nearest even, as the CPU backend does
}

// One block per token row; a layer without K has k_cache null.
template <typename T>
__global__ void WriteKvKernel(const float* k, int64_t k_width, const float* v, int64_t v_width,
                              const int64_t* slots, T* k_cache, T* v_cache) {
  const int64_t row = blockIdx.x;
  const int64_t slot = slots[row];
  if (slot < 0) return;  // a padding row of a step graph's batch stores nothing
  if (k_cache != nullptr) {
    for (int64_t c = threadIdx.x; c < k_width; c += blockDim.x) {
      StoreAs(k[row * k_width + c], k_cache + slot * k_width + c);
    }
  }
  for (int64_t c = threadIdx.x; c < v_width; c += blockDim.x) {
    StoreAs(v[row * v_width + c], v_cache + slot * v_width + c);
  }
}

}  // namespace

void LaunchRope(float* x, int64_t num_tokens, int num_heads, int head_dim, const int32_t* positions,
                const float* table, cudaStream_t stream) {
  if (num_tokens == 0 || num_heads == 0 || head_dim == 0) return;
  RopeKernel<<<static_cast<unsigned int>(num_tokens), kRowThreads, 0, stream>>>(
      x, num_heads, head_dim, positions, table);
  KVFOLD_CUDA_CHECK_LAUNCH();
}

void LaunchWriteKv(const float* k, int64_t k_width, const float* v, int64_t v_width,
                   const int64_t* slots, int64_t num_rows, DType cache_dtype, void* k_cache,
                   void* v_cache, cudaStream_t stream) {
  if (num_rows == 0 || v_width == 0) return;
  const auto grid = static_cast<unsigned int>(num_rows);
  if (cache_dtype == DType::kBF16) {
    WriteKvKernel<<<grid, kRowThreads, 0, stream>>>(k, k_width, v, v_width, slots,
                                                    static_cast<__nv_bfloat16*>(k_cache),
                                                    static_cast<__nv_bfloat16*>(v_cache));
  } else {
    WriteKvKernel<<<grid, kRowThreads, 0, stream>>>(
        k, k_width, v, v_width, slots, static_cast<float*>(k_cache), static_cast<float*>(v_cache));
  }
  KVFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace kvfold::cuda
