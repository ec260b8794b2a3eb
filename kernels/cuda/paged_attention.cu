// Causal paged attention, first version: one block per (query row, head), a single pass over the
// context in tiles of kTile positions with an online (running-max) softmax.
//
// Determinism: a row's output depends only on its query, its sequence's cache and block table, and
// its position. Each score is one warp's fixed butterfly sum; tile maxima and sums are sequential
// loops over the tile; V is accumulated per output dim in position order. No atomics, so the result
// is bit-identical whatever else shares the batch.
#include <cuda_bf16.h>

#include <cmath>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"

namespace kvfold::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 64;
constexpr int kDimsPerThread = kMaxAttentionHeadDim / kThreads;
static_assert(kMaxAttentionHeadDim % kThreads == 0);

__device__ __forceinline__ float LoadAsF32(const float* p) { return *p; }
__device__ __forceinline__ float LoadAsF32(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// T: the cache element type (float or __nv_bfloat16); arithmetic is F32 either way.
template <typename T>
__global__ void __launch_bounds__(kThreads) PagedAttentionKernel(PagedAttentionParams p) {
  extern __shared__ float q_shared[];  // head_dim floats
  __shared__ float probs[kTile];       // scores, then exp(score - running max)
  __shared__ int64_t slots[kTile];     // cache row of each position in the tile

  const int64_t row = blockIdx.x;
  const int head = blockIdx.y;
  const int kv_head = head / (p.num_heads / p.num_kv_heads);
  const int seq = p.row_seq[row];
  const int last = p.row_pos[row];  // attends to positions [0, last]
  const int64_t kv_stride = static_cast<int64_t>(p.num_kv_heads) * p.head_dim;
  const int64_t q_offset = (row * p.num_heads + head) * p.head_dim;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const T* k_base = static_cast<const T*>(p.k_cache) + static_cast<int64_t>(kv_head) * p.head_dim;
  const T* v_base = static_cast<const T*>(p.v_cache) + static_cast<int64_t>(kv_head) * p.head_dim;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  constexpr int kNumWarps = kThreads / kWarpSize;

  for (int d = threadIdx.x; d < p.head_dim; d += kThreads) q_shared[d] = p.q[q_offset + d];

  float acc[kDimsPerThread] = {};
  float running_max = -INFINITY;
  float running_sum = 0.0f;
  for (int start = 0; start <= last; start += kTile) {
    const int len = min(kTile, last + 1 - start);
    if (threadIdx.x < len) {
      const int pos = start + threadIdx.x;
      slots[threadIdx.x] =
          static_cast<int64_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
    }
    __syncthreads();  // slots and q_shared ready; previous tile's readers done

    // Scores: one warp per position, lanes split the head dim.
    for (int t = warp; t < len; t += kNumWarps) {
      const T* k_row = k_base + slots[t] * kv_stride;
      float dot = 0.0f;
      for (int d = lane; d < p.head_dim; d += kWarpSize) dot += q_shared[d] * LoadAsF32(k_row + d);
      dot = WarpSum(dot);
      if (lane == 0) probs[t] = dot * p.scale;
    }
    __syncthreads();

    float tile_max = -INFINITY;
    for (int t = 0; t < len; ++t) tile_max = fmaxf(tile_max, probs[t]);
    const float new_max = fmaxf(running_max, tile_max);
    __syncthreads();  // every thread has read the raw scores
    if (threadIdx.x < len) probs[threadIdx.x] = expf(probs[threadIdx.x] - new_max);
    __syncthreads();

    float tile_sum = 0.0f;
    for (int t = 0; t < len; ++t) tile_sum += probs[t];
    const float rescale = expf(running_max - new_max);  // 0 on the first tile
    running_sum = running_sum * rescale + tile_sum;
    running_max = new_max;
#pragma unroll
    for (int j = 0; j < kDimsPerThread; ++j) {
      const int d = threadIdx.x + j * kThreads;
      if (d < p.head_dim) {
        float a = acc[j] * rescale;
        for (int t = 0; t < len; ++t) a += probs[t] * LoadAsF32(v_base + slots[t] * kv_stride + d);
        acc[j] = a;
      }
    }
    __syncthreads();  // probs and slots are rewritten by the next tile
  }

#pragma unroll
  for (int j = 0; j < kDimsPerThread; ++j) {
    const int d = threadIdx.x + j * kThreads;
    if (d < p.head_dim) p.out[q_offset + d] = acc[j] / running_sum;
  }
}

}  // namespace

void LaunchPagedAttention(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_rows == 0 || params.num_heads == 0 || params.head_dim == 0) return;
  const dim3 grid(static_cast<unsigned int>(params.num_rows),
                  static_cast<unsigned int>(params.num_heads));
  const size_t shared_bytes = static_cast<size_t>(params.head_dim) * sizeof(float);
  if (params.kv_dtype == DType::kBF16) {
    PagedAttentionKernel<__nv_bfloat16><<<grid, kThreads, shared_bytes, stream>>>(params);
  } else {
    PagedAttentionKernel<float><<<grid, kThreads, shared_bytes, stream>>>(params);
  }
  KVFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace kvfold::cuda
