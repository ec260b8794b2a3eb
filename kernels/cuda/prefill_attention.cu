// The folded paged-attention kernel family, prefill side: one block per (tile of up to
// kPrefillTileRows query rows of one sequence, head group). K and V are staged in shared memory
// kKvTile positions at a time and serve every row of the tile; causal (row r sees positions
// [0, its position]); the context is the cached prefix plus the chunk itself.
//
// Same arithmetic as the split-K decode kernels (attention_order.cuh): pass 1 sweeps the scores
// (one thread per (row, position), ThreadScore) twice, for the row's max and then for
// l = sum of l_p * expf(m_p - m); pass 2 recomputes the scores (or reads P from the workspace),
// forms P per partition and adds each member's o_p, a position-ordered sum of P_j * v_j, to the
// output in partition order. Nothing is kept in global memory but the output (and P when
// writing), so prefill needs no workspace.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/attention_order.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"

namespace kvfold::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kRows = kPrefillTileRows;
constexpr int kPart = kAttentionPartition;
constexpr int kKvTile = 32;  // positions staged at once
constexpr int kSubTiles = kPart / kKvTile;
// Head dims up to kSmallHeadDim use a kernel with fewer accumulators (registers).
constexpr int kSmallHeadDim = 128;
static_assert(kPart % kKvTile == 0);
static_assert(kRows * kSmallHeadDim % kThreads == 0);

// Shared memory: q [kRows, head_dim + 1], kv [kKvTile, head_dim + 1] (rows padded by one float
// so one warp reading 32 positions' element d hits 32 banks), probs [kRows, kPart], and per row
// (m, 1 / l).
size_t SharedFloats(int head_dim) {
  return static_cast<size_t>(kRows + kKvTile) * (head_dim + 1) + kRows * kPart + 2 * kRows;
}

// Positions [j0, j0 + n) of the cache head at `base` into tile [n, dp] as F32 (exact).
template <typename T>
__device__ __forceinline__ void StageTile(const T* base, int64_t stride, const int32_t* table,
                                          int block_size, int j0, int n, int head_dim, int dp,
                                          float* tile) {
  for (int idx = threadIdx.x; idx < n * head_dim; idx += kThreads) {
    const int t = idx / head_dim, d = idx % head_dim;
    tile[t * dp + d] = LoadAsF32(base + SlotOf(table, block_size, j0 + t) * stride + d);
  }
}

// kMaxHeadDim: the largest head_dim this instance serves; it only sizes the accumulators.
template <typename T, int kMaxHeadDim>
__global__ void __launch_bounds__(kThreads) PrefillAttentionKernel(PagedAttentionParams p) {
  // Output elements (row, dim) of the tile each thread accumulates.
  constexpr int kAccumulators = kRows * kMaxHeadDim / kThreads;
  extern __shared__ float smem[];
  const int head_dim = p.head_dim, dp = head_dim + 1;
  float* q_s = smem;
  float* kv_s = q_s + kRows * dp;
  float* probs_s = kv_s + kKvTile * dp;
  float2* m_inv_l = reinterpret_cast<float2*>(probs_s + kRows * kPart);

  const int64_t first = p.tile_first_row[blockIdx.x];
  const int rows = p.tile_num_rows[blockIdx.x];
  const int group = blockIdx.y;
  const int seq = p.row_seq[first];
  const int map_row = p.per_seq_maps ? seq : 0;
  if (group >= p.num_groups[map_row]) return;  // whole block
  const int64_t entry = static_cast<int64_t>(map_row) * p.num_heads + group;
  const int64_t map_base = static_cast<int64_t>(map_row) * p.num_heads;
  const int64_t member_base = static_cast<int64_t>(map_row) * (p.num_heads + 1) + group;
  const int first_member = p.member_start[member_base];
  const int end_member = p.member_start[member_base + 1];
  const int score_head = p.group_score[entry];
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const bool reading = p.probs_mode == 2;
  const int last = p.row_pos[first + rows - 1];  // rows of a chunk ascend in position
  const int num_parts = last / kPart + 1;
  const T* k_base = reading ? nullptr
                            : static_cast<const T*>(p.k_cache) +
                                  static_cast<int64_t>(p.group_k[entry]) * head_dim;
  auto row_pos = [&](int r) { return r < rows ? p.row_pos[first + r] : -1; };
  auto stored_row = [&](int r) {
    return p.probs + ((first + r) * p.num_score_heads + score_head) * p.probs_cols;
  };

  if (!reading) {
    for (int idx = threadIdx.x; idx < kRows * head_dim; idx += kThreads) {
      const int r = idx / head_dim, d = idx % head_dim;
      q_s[r * dp + d] =
          r < rows ? p.q[((first + r) * p.num_score_heads + score_head) * head_dim + d] : 0.0f;
    }
  }
  // Scores of partition `part` for every (row, position) the row sees, into probs_s; with
  // `normalise`, P from them (m_inv_l must be set).
  auto partition_scores = [&](int part, bool normalise) {
    for (int sub = 0; sub < kSubTiles; ++sub) {
      const int j0 = part * kPart + sub * kKvTile;
      if (j0 > last) break;
      const int n = min(kKvTile, last + 1 - j0);
      StageTile(k_base, p.k_stride, table, p.block_size, j0, n, head_dim, dp, kv_s);
      __syncthreads();
      for (int pair = threadIdx.x; pair < kRows * kKvTile; pair += kThreads) {
        const int r = pair / kKvTile, t = pair % kKvTile;
        if (t < n && j0 + t <= row_pos(r)) {
          float s = ThreadScore(q_s + r * dp, kv_s + t * dp, head_dim, p.scale);
          if (normalise) {
            s = Probability(s, m_inv_l[r]);
            if (p.probs != nullptr) stored_row(r)[j0 + t] = s;
          }
          probs_s[r * kPart + sub * kKvTile + t] = s;
        }
      }
      __syncthreads();  // kv_s is restaged next
    }
  };

  // Pass 1, twice over the scores (no workspace): the row's max m, then
  // l = sum over partitions of l_p * expf(m_p - m), exactly as CombineStats forms them. Thread r
  // owns row r.
  if (!reading) {
    const int r = threadIdx.x;
    float m = -INFINITY, l = 0.0f;
    for (int sweep = 0; sweep < 2; ++sweep) {
      for (int part = 0; part < num_parts; ++part) {
        partition_scores(part, false);
        if (r < rows && part * kPart <= row_pos(r)) {
          const float* s = probs_s + r * kPart;
          const int n = min(kPart, row_pos(r) + 1 - part * kPart);
          if (sweep == 0) {
            for (int j = 0; j < n; ++j) m = fmaxf(m, s[j]);
          } else {
            l = AddPartitionSum(l, PartitionStats(s, n), m);
          }
        }
        __syncthreads();  // probs_s is rewritten by the next partition
      }
    }
    if (r < rows) m_inv_l[r] = make_float2(m, __fdiv_rn(1.0f, l));
    __syncthreads();
  }

  // Pass 2: P per partition, then each member's o_p added to its output in partition order.
  for (int part = 0; part < num_parts; ++part) {
    if (reading) {
      for (int idx = threadIdx.x; idx < kRows * kPart; idx += kThreads) {
        const int r = idx / kPart, t = idx % kPart;
        if (part * kPart + t <= row_pos(r)) probs_s[idx] = stored_row(r)[part * kPart + t];
      }
      __syncthreads();
    } else {
      partition_scores(part, true);
    }
    for (int i = first_member; i < end_member; ++i) {
      const T* v_base = static_cast<const T*>(p.v_cache) +
                        static_cast<int64_t>(p.member_v_head[map_base + i]) * head_dim;
      const int out_head = p.member_out_head[map_base + i];
      float acc[kAccumulators];
#pragma unroll
      for (int a = 0; a < kAccumulators; ++a) acc[a] = 0.0f;
      for (int sub = 0; sub < kSubTiles; ++sub) {
        const int j0 = part * kPart + sub * kKvTile;
        if (j0 > last) break;
        const int n = min(kKvTile, last + 1 - j0);
        StageTile(v_base, p.v_stride, table, p.block_size, j0, n, head_dim, dp, kv_s);
        __syncthreads();
#pragma unroll
        for (int a = 0; a < kAccumulators; ++a) {
          const int idx = threadIdx.x + a * kThreads;
          if (idx < kRows * head_dim) {
            const int r = idx / head_dim, d = idx % head_dim;
            const int seen = min(n, row_pos(r) + 1 - j0);  // positions of the sub-tile row r sees
            const float* pr = probs_s + r * kPart + sub * kKvTile;
            for (int t = 0; t < seen; ++t) acc[a] = __fmaf_rn(pr[t], kv_s[t * dp + d], acc[a]);
          }
        }
        __syncthreads();  // kv_s is restaged next
      }
#pragma unroll
      for (int a = 0; a < kAccumulators; ++a) {
        const int idx = threadIdx.x + a * kThreads;
        if (idx < kRows * head_dim) {
          const int r = idx / head_dim, d = idx % head_dim;
          if (part * kPart <= row_pos(r)) {
            // This thread wrote the previous partitions' sum of this element itself.
            float* o = p.out + ((first + r) * p.num_heads + out_head) * head_dim + d;
            *o = __fadd_rn(part == 0 ? 0.0f : *o, acc[a]);
          }
        }
      }
    }
    __syncthreads();  // probs_s is rewritten by the next partition
  }
}

template <typename T, int kMaxHeadDim>
void LaunchFor(const PagedAttentionParams& params, cudaStream_t stream) {
  const size_t bytes = SharedFloats(params.head_dim) * sizeof(float);
  KVFOLD_CUDA_CHECK(cudaFuncSetAttribute(PrefillAttentionKernel<T, kMaxHeadDim>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
  const dim3 grid(static_cast<unsigned int>(params.num_tiles),
                  static_cast<unsigned int>(params.num_heads));
  PrefillAttentionKernel<T, kMaxHeadDim><<<grid, kThreads, bytes, stream>>>(params);
  KVFOLD_CUDA_CHECK_LAUNCH();
}

// The instance is chosen by the layer's head_dim only; both do the same arithmetic.
template <typename T>
void Launch(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.head_dim <= kSmallHeadDim) {
    LaunchFor<T, kSmallHeadDim>(params, stream);
  } else {
    LaunchFor<T, kMaxAttentionHeadDim>(params, stream);
  }
}

}  // namespace

void LaunchPrefillAttention(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_tiles == 0 || params.num_heads == 0 || params.head_dim == 0) return;
  if (params.kv_dtype == DType::kBF16) {
    Launch<__nv_bfloat16>(params, stream);
  } else {
    Launch<float>(params, stream);
  }
}

}  // namespace kvfold::cuda
