// Kernels that place tokens: RoPE rotation by position, and K/V writes into cache slots.
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"

namespace kvfold::cuda {
namespace {

constexpr int kRowThreads = 128;

// Rotates the pair (a, b) = (h[i], h[i + half]) by one angle. Each product and sum is rounded on
// its own (the __f*_rn intrinsics are never contracted into FMAs), as the CPU backend computes it,
// so RopeKernel and RopeWriteKvKernel give the same bits, and those of the CPU.
__device__ __forceinline__ float2 Rotate(float a, float b, float cos, float sin) {
  return {__fsub_rn(__fmul_rn(a, cos), __fmul_rn(b, sin)),
          __fadd_rn(__fmul_rn(b, cos), __fmul_rn(a, sin))};
}

// Rotates the num_heads heads of one token's row in place; thread t takes pairs t, t + blockDim.
__device__ __forceinline__ void RotateRow(float* row, int num_heads, int head_dim,
                                          const float* cos_sin) {
  const int half = head_dim / 2;
  for (int p = threadIdx.x; p < num_heads * half; p += blockDim.x) {
    float* h = row + (p / half) * head_dim;
    const int i = p % half;
    const float2 r = Rotate(h[i], h[i + half], cos_sin[i], cos_sin[half + i]);
    h[i] = r.x;
    h[i + half] = r.y;
  }
}

// One block per token.
__global__ void RopeKernel(float* x, int num_heads, int head_dim, const int32_t* positions,
                           const float* table) {
  const int64_t token = blockIdx.x;
  RotateRow(x + token * num_heads * head_dim, num_heads, head_dim,
            table + static_cast<int64_t>(positions[token]) * head_dim);
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

// RopeKernel on q and k, then WriteKvKernel, for one token per block: the rotated k pairs go to
// the k buffer and, unless the slot is negative, to the cache; v goes to the cache.
template <typename T>
__global__ void RopeWriteKvKernel(RopeWriteKvArgs args, T* k_cache, T* v_cache) {
  const int64_t token = blockIdx.x;
  const int head_dim = args.head_dim, half = head_dim / 2;
  const float* cos_sin = args.table + static_cast<int64_t>(args.positions[token]) * head_dim;
  RotateRow(args.q + token * args.num_q_heads * head_dim, args.num_q_heads, head_dim, cos_sin);
  const int64_t slot = args.slots[token];
  const int64_t k_width = int64_t{args.num_k_heads} * head_dim;
  float* k_row = args.k + token * k_width;
  for (int p = threadIdx.x; p < args.num_k_heads * half; p += blockDim.x) {
    const int64_t c = int64_t{p / half} * head_dim + p % half;
    const float2 r = Rotate(k_row[c], k_row[c + half], cos_sin[p % half], cos_sin[half + p % half]);
    k_row[c] = r.x;
    k_row[c + half] = r.y;
    if (slot >= 0) {
      StoreAs(r.x, k_cache + slot * k_width + c);
      StoreAs(r.y, k_cache + slot * k_width + c + half);
    }
  }
  if (slot < 0) return;  // a padding row of a step graph's batch stores nothing
  for (int64_t c = threadIdx.x; c < args.v_width; c += blockDim.x) {
    StoreAs(args.v[token * args.v_width + c], v_cache + slot * args.v_width + c);
  }
}

}  // namespace

void LaunchRopeWriteKv(const RopeWriteKvArgs& args, DType cache_dtype, void* k_cache, void* v_cache,
                       cudaStream_t stream) {
  if (args.num_tokens == 0) return;
  const auto grid = static_cast<unsigned int>(args.num_tokens);
  if (cache_dtype == DType::kBF16) {
    RopeWriteKvKernel<<<grid, kRowThreads, 0, stream>>>(args, static_cast<__nv_bfloat16*>(k_cache),
                                                        static_cast<__nv_bfloat16*>(v_cache));
  } else {
    RopeWriteKvKernel<<<grid, kRowThreads, 0, stream>>>(args, static_cast<float*>(k_cache),
                                                        static_cast<float*>(v_cache));
  }
  KVFOLD_CUDA_CHECK_LAUNCH();
}

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
