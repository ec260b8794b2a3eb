// The folded paged-attention kernel family, decode side: split-K ("flash-decoding") over
// partitions of kAttentionPartition positions, one block per (decode row, head group, partition).
// A group's output heads share one probability row P (same score head and K head), computed once
// (or read from the probabilities workspace) and applied to each member's V.
//
// Three launches, each following attention_order.cuh's canonical order:
//   1. scores: s_j of the partition (one warp per position) to part_scores; (m_p, l_p) to
//      part_stats. Skipped when P is read from the workspace.
//   2. values: (m, 1 / l) from every partition's stats, P_j (stored when writing), and per member
//      the partition's position-ordered P·V sum o_p to part_out. When the scores would need more
//      workspace than kMaxScoreWorkspaceBytes (many rows, long tables), phase 1 keeps only the
//      stats and phase 2 recomputes the scores (K read twice; the same arithmetic, so the same
//      bits).
//   3. combine: out = sum of o_p in partition order, per output head.
// Blocks of partitions past a row's position exit at once, so the grid depends only on the block
// tables' width. No atomics and no order that depends on timing: a row's output is bit-identical
// whatever else shares the batch, and equals the prefill kernel's (prefill_attention.cu).
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/attention_order.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"

namespace kvfold::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kPart = kAttentionPartition;
constexpr int kDimsPerThread = kMaxAttentionHeadDim / kThreads;
constexpr int kNumWarps = kThreads / kWarpSize;
static_assert(kMaxAttentionHeadDim % kThreads == 0);
static_assert(kPart % kThreads == 0);

// What a (decode row, group, partition) block works on; valid() false when it has nothing to do.
// Row of decode row `index` (decode_rows is null when every row of the batch is a decode row).
__device__ __forceinline__ int64_t DecodeRow(const PagedAttentionParams& p, int64_t index) {
  return p.decode_rows == nullptr ? index : p.decode_rows[index];
}

struct DecodeBlock {
  int64_t index;  // in decode_rows
  int64_t row;
  int seq;
  int group;
  int part;
  int last;  // the row's position
  int start;
  int len;
  int64_t entry;  // of the group in group_score / group_k
  int64_t map_base;
  int first_member;
  int end_member;
  const int32_t* table;

  __device__ bool valid() const { return len > 0; }
};

__device__ __forceinline__ DecodeBlock PlaceDecodeBlock(const PagedAttentionParams& p) {
  DecodeBlock b;
  b.index = blockIdx.x;
  b.row = DecodeRow(p, b.index);
  b.seq = p.row_seq[b.row];
  b.group = blockIdx.y;
  b.part = blockIdx.z;
  b.last = p.row_pos[b.row];
  b.start = b.part * kPart;
  const int map_row = p.per_seq_maps ? b.seq : 0;
  b.len = b.group < p.num_groups[map_row] ? min(kPart, b.last + 1 - b.start) : 0;
  b.entry = static_cast<int64_t>(map_row) * p.num_heads + b.group;
  b.map_base = static_cast<int64_t>(map_row) * p.num_heads;
  const int64_t member_base = static_cast<int64_t>(map_row) * (p.num_heads + 1) + b.group;
  b.first_member = p.member_start[member_base];
  b.end_member = p.member_start[member_base + 1];
  b.table = p.block_tables + static_cast<int64_t>(b.seq) * p.max_blocks_per_seq;
  return b;
}

// Decode rows' stats are kept per decode row (index in decode_rows).
__device__ __forceinline__ int64_t StatsIndex(const PagedAttentionParams& p, int64_t index,
                                              int group) {
  return (index * p.num_heads + group) * p.num_partitions;
}

// The partition's scores into scores[0, b.len) (slots filled); contains barriers.
template <typename T>
__device__ __forceinline__ void PartitionScores(const PagedAttentionParams& p, const DecodeBlock& b,
                                                float* q_shared, float* scores, int64_t* slots) {
  const int score_head = p.group_score[b.entry];
  const T* k_base =
      static_cast<const T*>(p.k_cache) + static_cast<int64_t>(p.group_k[b.entry]) * p.head_dim;
  const int64_t q_offset = (b.row * p.num_score_heads + score_head) * p.head_dim;
  for (int d = threadIdx.x; d < p.head_dim; d += kThreads) q_shared[d] = p.q[q_offset + d];
  for (int t = threadIdx.x; t < b.len; t += kThreads) {
    slots[t] = SlotOf(b.table, p.block_size, b.start + t);
  }
  __syncthreads();
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  for (int t = warp; t < b.len; t += kNumWarps) {
    const float partial =
        DotLanePartial(q_shared, k_base + slots[t] * p.k_stride, p.head_dim, lane);
    const float s = WarpScore(partial, p.scale);
    if (lane == 0) scores[t] = s;
  }
  __syncthreads();
}

// Max of v[0, n) over the block (exact: a max does not depend on order). Contains barriers.
__device__ __forceinline__ float BlockMax(const float* v, int n, float* warp_max) {
  float m = -INFINITY;
  for (int t = threadIdx.x; t < n; t += kThreads) m = fmaxf(m, v[t]);
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  }
  if (threadIdx.x % kWarpSize == 0) warp_max[threadIdx.x / kWarpSize] = m;
  __syncthreads();
  float result = warp_max[0];
  for (int w = 1; w < kNumWarps; ++w) result = fmaxf(result, warp_max[w]);
  return result;
}

// Phase 1: the partition's (m_p, l_p), and its scores unless phase 2 recomputes them. The same
// values as PartitionStats: the exponentials are formed in parallel, only their position-ordered
// sum is serial.
template <typename T>
__global__ void __launch_bounds__(kThreads) DecodeScoresKernel(PagedAttentionParams p) {
  extern __shared__ float q_shared[];  // head_dim floats
  __shared__ float scores[kPart];
  __shared__ float exps[kPart];
  __shared__ int64_t slots[kPart];
  __shared__ float warp_max[kNumWarps];
  const DecodeBlock b = PlaceDecodeBlock(p);
  if (!b.valid()) return;  // whole block: no barrier is skipped by part of it
  PartitionScores<T>(p, b, q_shared, scores, slots);
  const float m_p = BlockMax(scores, b.len, warp_max);
  for (int t = threadIdx.x; t < b.len; t += kThreads) exps[t] = expf(__fsub_rn(scores[t], m_p));
  __syncthreads();
  if (threadIdx.x == 0) {
    float l_p = 0.0f;
    for (int t = 0; t < b.len; ++t) l_p = __fadd_rn(l_p, exps[t]);
    p.part_stats[StatsIndex(p, b.index, b.group) + b.part] = make_float2(m_p, l_p);
  }
  if (p.part_scores == nullptr) return;
  float* out_scores =
      p.part_scores + ((b.index * p.num_heads + b.group) * p.num_partitions + b.part) * kPart;
  for (int t = threadIdx.x; t < b.len; t += kThreads) out_scores[t] = scores[t];
}

// Phase 2: P of the partition and each member's o_p.
template <typename T>
__global__ void __launch_bounds__(kThreads) DecodeValuesKernel(PagedAttentionParams p) {
  extern __shared__ float q_shared[];  // head_dim floats when recomputing scores
  __shared__ float probs[kPart];
  __shared__ int64_t slots[kPart];
  __shared__ float2 m_inv_l;
  const DecodeBlock b = PlaceDecodeBlock(p);
  if (!b.valid()) return;
  const bool reading = p.probs_mode == 2;
  const bool recompute = !reading && p.part_scores == nullptr;
  if (recompute) PartitionScores<T>(p, b, q_shared, probs, slots);
  const int score_head = p.group_score[b.entry];
  float* stored = p.probs == nullptr
                      ? nullptr
                      : p.probs + (b.row * p.num_score_heads + score_head) * p.probs_cols;
  if (!reading && threadIdx.x < kWarpSize) {
    // CombineStats by warp 0: the terms l_p * expf(m_p - m) in parallel, their sum in order.
    const float2* stats = p.part_stats + StatsIndex(p, b.index, b.group);
    const int num_parts = b.last / kPart + 1;
    const int lane = threadIdx.x;
    float m = -INFINITY;
    for (int q = lane; q < num_parts; q += kWarpSize) m = fmaxf(m, stats[q].x);
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    }
    float l = 0.0f;
    for (int chunk = 0; chunk < num_parts; chunk += kWarpSize) {
      const int q = chunk + lane;
      const float term = q < num_parts ? PartitionTerm(stats[q], m) : 0.0f;
      const int count = min(kWarpSize, num_parts - chunk);
      for (int i = 0; i < count; ++i) l = __fadd_rn(l, __shfl_sync(0xffffffffu, term, i));
    }
    if (lane == 0) m_inv_l = make_float2(m, __fdiv_rn(1.0f, l));
  }
  if (!recompute) {  // PartitionScores filled them
    for (int t = threadIdx.x; t < b.len; t += kThreads) {
      slots[t] = SlotOf(b.table, p.block_size, b.start + t);
    }
  }
  __syncthreads();
  const float* scores =
      recompute
          ? probs
          : p.part_scores + ((b.index * p.num_heads + b.group) * p.num_partitions + b.part) * kPart;
  for (int t = threadIdx.x; t < b.len; t += kThreads) {  // each thread rewrites its own entries
    if (reading) {
      probs[t] = stored[b.start + t];
    } else {
      const float pt = Probability(scores[t], m_inv_l);
      probs[t] = pt;
      if (stored != nullptr) stored[b.start + t] = pt;
    }
  }
  __syncthreads();
  for (int i = b.first_member; i < b.end_member; ++i) {
    const T* v_base = static_cast<const T*>(p.v_cache) +
                      static_cast<int64_t>(p.member_v_head[b.map_base + i]) * p.head_dim;
    const int out_head = p.member_out_head[b.map_base + i];
    float* o =
        p.part_out + ((b.index * p.num_heads + out_head) * p.num_partitions + b.part) * p.head_dim;
#pragma unroll
    for (int j = 0; j < kDimsPerThread; ++j) {
      const int d = threadIdx.x + j * kThreads;
      if (d < p.head_dim) {
        float a = 0.0f;
        for (int t = 0; t < b.len; ++t) {
          a = __fmaf_rn(probs[t], LoadAsF32(v_base + slots[t] * p.v_stride + d), a);
        }
        o[d] = a;
      }
    }
  }
}

// Phase 3: out = sum of o_p in partition order; one block per (decode row, output head).
__global__ void __launch_bounds__(kThreads) DecodeCombineKernel(PagedAttentionParams p) {
  const int64_t index = blockIdx.x;
  const int head = blockIdx.y;
  const int64_t row = DecodeRow(p, index);
  const int num_parts = p.row_pos[row] / kPart + 1;
  const float* partials = p.part_out + (index * p.num_heads + head) * p.num_partitions * p.head_dim;
  float* o = p.out + (row * p.num_heads + head) * p.head_dim;
  for (int d = threadIdx.x; d < p.head_dim; d += kThreads) {
    float a = 0.0f;
    for (int part = 0; part < num_parts; ++part) {
      a = __fadd_rn(a, partials[static_cast<int64_t>(part) * p.head_dim + d]);
    }
    o[d] = a;
  }
}

size_t AlignUp(size_t bytes) { return (bytes + 255) / 256 * 256; }

template <typename T>
void LaunchDecode(const PagedAttentionParams& params, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(params.num_decode_rows),
                  static_cast<unsigned int>(params.num_heads),
                  static_cast<unsigned int>(params.num_partitions));
  const size_t q_bytes = static_cast<size_t>(params.head_dim) * sizeof(float);
  if (params.probs_mode != 2) {
    DecodeScoresKernel<T><<<grid, kThreads, q_bytes, stream>>>(params);
    KVFOLD_CUDA_CHECK_LAUNCH();
  }
  DecodeValuesKernel<T><<<grid, kThreads, q_bytes, stream>>>(params);
  KVFOLD_CUDA_CHECK_LAUNCH();
  const dim3 combine_grid(static_cast<unsigned int>(params.num_decode_rows),
                          static_cast<unsigned int>(params.num_heads));
  DecodeCombineKernel<<<combine_grid, kThreads, 0, stream>>>(params);
  KVFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t ScoreWorkspaceBytes(const PagedAttentionParams& params) {
  if (params.probs_mode == 2) return 0;
  return AlignUp(static_cast<size_t>(params.num_decode_rows) * params.num_heads *
                 params.num_partitions * kAttentionPartition * sizeof(float));
}

size_t AttentionWorkspaceBytes(const PagedAttentionParams& params, bool keep_scores) {
  const auto per_row = static_cast<size_t>(params.num_heads) * params.num_partitions;
  const size_t stats = AlignUp(params.num_decode_rows * per_row * sizeof(float2));
  const size_t out = AlignUp(params.num_decode_rows * per_row * params.head_dim * sizeof(float));
  return (keep_scores ? ScoreWorkspaceBytes(params) : 0) + stats + out;
}

void AssignAttentionWorkspace(void* workspace, bool keep_scores, PagedAttentionParams& params) {
  const auto per_row = static_cast<size_t>(params.num_heads) * params.num_partitions;
  char* at = static_cast<char*>(workspace);
  params.part_scores =
      keep_scores && params.probs_mode != 2 ? reinterpret_cast<float*>(at) : nullptr;
  if (keep_scores) at += ScoreWorkspaceBytes(params);
  params.part_stats = reinterpret_cast<float2*>(at);
  at += AlignUp(params.num_decode_rows * per_row * sizeof(float2));
  params.part_out = reinterpret_cast<float*>(at);
}

void LaunchPagedAttention(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_rows == 0 || params.num_heads == 0 || params.head_dim == 0) return;
  if (params.num_decode_rows > 0 && params.num_partitions > 0) {
    if (params.kv_dtype == DType::kBF16) {
      LaunchDecode<__nv_bfloat16>(params, stream);
    } else {
      LaunchDecode<float>(params, stream);
    }
  }
  if (params.num_tiles > 0) LaunchPrefillAttention(params, stream);
}

}  // namespace kvfold::cuda
