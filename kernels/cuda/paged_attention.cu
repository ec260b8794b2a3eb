// The folded paged-attention kernel family: one block per (query row, head group). A group's
// output heads share one probability row P (same score head and K head), which the block computes
// once (or reads from the probabilities workspace) and applies to each member's V.
//
// Exact two-pass softmax, so P is normalised before it meets V (as on the CPU backend) and a
// stored P feeds the same arithmetic as a recomputed one: pass 1 walks the context in tiles of
// kTile positions keeping a running max and sum; pass 2 recomputes each tile's scores, forms
// P_t = exp(s_t - max) * (1 / sum), optionally stores it, and accumulates P_t * V_t per member.
//
// Determinism: each score is one warp's fixed butterfly sum; maxima and sums are sequential loops
// over the tile; V is accumulated per output dim in position order by the thread that owns the
// dim. No atomics: a row's output is bit-identical whatever else shares the batch.
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
constexpr int kNumWarps = kThreads / kWarpSize;
static_assert(kMaxAttentionHeadDim % kThreads == 0);

__device__ __forceinline__ float LoadAsF32(const float* p) { return *p; }
__device__ __forceinline__ float LoadAsF32(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// Scale * q · K row for the tile's positions into scores[t]; one warp per position.
template <typename T>
__device__ __forceinline__ void TileScores(const PagedAttentionParams& p, const float* q_shared,
                                           const T* k_base, const int64_t* slots, int len,
                                           float* scores) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  for (int t = warp; t < len; t += kNumWarps) {
    const T* k_row = k_base + slots[t] * p.k_stride;
    float dot = 0.0f;
    for (int d = lane; d < p.head_dim; d += kWarpSize) dot += q_shared[d] * LoadAsF32(k_row + d);
    dot = WarpSum(dot);
    if (lane == 0) scores[t] = dot * p.scale;
  }
}

// Cache row of each position of the tile [start, start + len) into slots[t]: thread t writes t.
__device__ __forceinline__ void TileSlots(const PagedAttentionParams& p, const int32_t* table,
                                          int start, int len, int64_t* slots) {
  if (threadIdx.x < len) {
    const int pos = start + threadIdx.x;
    slots[threadIdx.x] =
        static_cast<int64_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
  }
}

// T: the cache element type (float or __nv_bfloat16); arithmetic is F32 either way.
template <typename T>
__global__ void __launch_bounds__(kThreads) FoldedAttentionKernel(PagedAttentionParams p) {
  extern __shared__ float q_shared[];  // head_dim floats
  __shared__ float probs[kTile];       // scores, then P
  __shared__ int64_t slots[kTile];     // cache row of each position in the tile

  const int64_t row = blockIdx.x;
  const int group = blockIdx.y;
  const int seq = p.row_seq[row];
  const int map_row = p.per_seq_maps ? seq : 0;
  if (group >= p.num_groups[map_row]) return;  // whole block: no barrier is skipped by part of it
  const int64_t entry = static_cast<int64_t>(map_row) * p.num_heads + group;
  const int score_head = p.group_score[entry];
  const int last = p.row_pos[row];  // attends to positions [0, last]
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const bool reading = p.probs_mode == 2;
  float* stored = p.probs == nullptr
                      ? nullptr
                      : p.probs + (row * p.num_score_heads + score_head) * p.probs_cols;
  const T* k_base = reading ? nullptr
                            : static_cast<const T*>(p.k_cache) +
                                  static_cast<int64_t>(p.group_k[entry]) * p.head_dim;
  const int64_t member_base = static_cast<int64_t>(map_row) * (p.num_heads + 1) + group;
  const int first_member = p.member_start[member_base];
  const int end_member = p.member_start[member_base + 1];
  const int64_t members = static_cast<int64_t>(map_row) * p.num_heads;

  if (!reading) {
    const int64_t q_offset = (row * p.num_score_heads + score_head) * p.head_dim;
    for (int d = threadIdx.x; d < p.head_dim; d += kThreads) q_shared[d] = p.q[q_offset + d];
  }

  // Pass 1: the softmax's max and sum.
  float max_score = -INFINITY, sum = 0.0f;
  if (!reading) {
    for (int start = 0; start <= last; start += kTile) {
      const int len = min(kTile, last + 1 - start);
      TileSlots(p, table, start, len, slots);
      __syncthreads();  // slots and q_shared ready; previous tile's readers done
      TileScores(p, q_shared, k_base, slots, len, probs);
      __syncthreads();
      float tile_max = -INFINITY;
      for (int t = 0; t < len; ++t) tile_max = fmaxf(tile_max, probs[t]);
      const float new_max = fmaxf(max_score, tile_max);
      float tile_sum = 0.0f;
      for (int t = 0; t < len; ++t) tile_sum += expf(probs[t] - new_max);
      sum = sum * expf(max_score - new_max) + tile_sum;  // 0 * 0 on the first tile
      max_score = new_max;
      __syncthreads();  // probs and slots are rewritten by the next tile
    }
  }
  const float inv_sum = 1.0f / sum;

  // Pass 2: P tile by tile, applied to every member's V.
  for (int start = 0; start <= last; start += kTile) {
    const int len = min(kTile, last + 1 - start);
    TileSlots(p, table, start, len, slots);
    __syncthreads();
    if (reading) {
      if (threadIdx.x < len) probs[threadIdx.x] = stored[start + threadIdx.x];
    } else {
      TileScores(p, q_shared, k_base, slots, len, probs);
      __syncthreads();
      if (threadIdx.x < len) {
        const float pt = expf(probs[threadIdx.x] - max_score) * inv_sum;
        probs[threadIdx.x] = pt;
        if (stored != nullptr) stored[start + threadIdx.x] = pt;
      }
    }
    __syncthreads();
    for (int i = first_member; i < end_member; ++i) {
      const T* v_base = static_cast<const T*>(p.v_cache) +
                        static_cast<int64_t>(p.member_v_head[members + i]) * p.head_dim;
      float* o = p.out + (row * p.num_heads + p.member_out_head[members + i]) * p.head_dim;
#pragma unroll
      for (int j = 0; j < kDimsPerThread; ++j) {
        const int d = threadIdx.x + j * kThreads;
        if (d < p.head_dim) {
          float a = start == 0 ? 0.0f : o[d];  // this thread wrote it on the previous tile
          for (int t = 0; t < len; ++t)
            a += probs[t] * LoadAsF32(v_base + slots[t] * p.v_stride + d);
          o[d] = a;
        }
      }
    }
    __syncthreads();  // probs and slots are rewritten by the next tile
  }
}

}  // namespace

void LaunchPagedAttention(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_rows == 0 || params.num_heads == 0 || params.head_dim == 0) return;
  // One block per (row, group slot); slots past a map row's group count return at once.
  const dim3 grid(static_cast<unsigned int>(params.num_rows),
                  static_cast<unsigned int>(params.num_heads));
  const size_t shared_bytes = static_cast<size_t>(params.head_dim) * sizeof(float);
  if (params.kv_dtype == DType::kBF16) {
    FoldedAttentionKernel<__nv_bfloat16><<<grid, kThreads, shared_bytes, stream>>>(params);
  } else {
    FoldedAttentionKernel<float><<<grid, kThreads, shared_bytes, stream>>>(params);
  }
  KVFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace kvfold::cuda
