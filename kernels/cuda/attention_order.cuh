// The CUDA backend's canonical attention arithmetic. Every attention kernel (split-K decode,
// tiled prefill) builds each output element from these helpers in the same order, so which kernel
// serves a row never changes its bits (ops.h: a sequence's output must not depend on the batch).
//
// For a query row at position `last`, positions [0, last] fall into partitions of
// kAttentionPartition positions (partition p holds [p * 256, p * 256 + 255]):
//   s_j   = scale * dot(q, k_j)           dot: lane l (0..31) sums q[d] * k[d] for d = l, l + 32,
//   ...
//                                         in ascending d with fused multiply-adds from 0, then the
//                                         32 lane sums are added in WarpSum's butterfly order
//   m_p   = max of the partition's s_j;   l_p = sum of expf(s_j - m_p) in position order from 0
//   m     = max of m_p;                   l   = sum over p in order of l_p * expf(m_p - m), from 0
//   P_j   = expf(s_j - m) * (1 / l)       (normalised before it meets V, so a stored P is exact)
//   o_p   = sum over the partition in position order of P_j * v_j (fused multiply-adds from 0)
//   out   = sum over p in order of o_p, from +0
// All operations are written as explicit IEEE intrinsics so nvcc cannot contract them differently
// in different kernels.
#pragma once

#include <cuda_bf16.h>

#include <cmath>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/kernels.h"

namespace kvfold::cuda {

__device__ __forceinline__ float LoadAsF32(const float* p) { return *p; }
__device__ __forceinline__ float LoadAsF32(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// Lane `lane`'s share of the canonical dot product of q (F32) and k.
template <typename T>
__device__ __forceinline__ float DotLanePartial(const float* q, const T* k, int head_dim,
                                                int lane) {
  float a = 0.0f;
  for (int d = lane; d < head_dim; d += kWarpSize) a = __fmaf_rn(q[d], LoadAsF32(k + d), a);
  return a;
}

// The canonical score from one warp: every lane passes its DotLanePartial; every lane gets s.
__device__ __forceinline__ float WarpScore(float partial, float scale) {
  return __fmul_rn(WarpSum(partial), scale);
}

// The same score computed by one thread: the 32 lane partials, then WarpSum's butterfly (at step
// `offset`, lane i < offset holds v_i + v_(i + offset); addition is commutative, so the lanes of
// the warp version hold the same values).
__device__ __forceinline__ float ThreadScore(const float* q, const float* k, int head_dim,
                                             float scale) {
  float part[kWarpSize];
#pragma unroll
  for (int l = 0; l < kWarpSize; ++l) part[l] = 0.0f;
  // Lane l's terms in ascending d, as in DotLanePartial; the lane loop is unrolled so part stays
  // in registers.
  for (int d0 = 0; d0 < head_dim; d0 += kWarpSize) {
#pragma unroll
    for (int l = 0; l < kWarpSize; ++l) {
      if (d0 + l < head_dim) part[l] = __fmaf_rn(q[d0 + l], k[d0 + l], part[l]);
    }
  }
  // Offsets 16, 8, 4, 2, 1, each loop with a constant trip count so it unrolls into registers.
#pragma unroll
  for (int i = 0; i < 16; ++i) part[i] = __fadd_rn(part[i], part[i + 16]);
#pragma unroll
  for (int i = 0; i < 8; ++i) part[i] = __fadd_rn(part[i], part[i + 8]);
#pragma unroll
  for (int i = 0; i < 4; ++i) part[i] = __fadd_rn(part[i], part[i + 4]);
#pragma unroll
  for (int i = 0; i < 2; ++i) part[i] = __fadd_rn(part[i], part[i + 2]);
  return __fmul_rn(__fadd_rn(part[0], part[1]), scale);
}

// m_p and l_p of one partition's scores s[0, n).
__device__ __forceinline__ float2 PartitionStats(const float* s, int n) {
  float m = -INFINITY;
  for (int j = 0; j < n; ++j) m = fmaxf(m, s[j]);
  float l = 0.0f;
  for (int j = 0; j < n; ++j) l = __fadd_rn(l, expf(__fsub_rn(s[j], m)));
  return make_float2(m, l);
}

// Partition p's term of l: l_p * expf(m_p - m).
__device__ __forceinline__ float PartitionTerm(float2 stats, float m) {
  return __fmul_rn(stats.y, expf(__fsub_rn(stats.x, m)));
}

// One step of l = sum over p in order of PartitionTerm.
__device__ __forceinline__ float AddPartitionSum(float l, float2 stats, float m) {
  return __fadd_rn(l, PartitionTerm(stats, m));
}

// m and 1 / l of a row from its partitions' (m_p, l_p), in partition order.
__device__ __forceinline__ float2 CombineStats(const float2* stats, int num_parts) {
  float m = -INFINITY;
  for (int p = 0; p < num_parts; ++p) m = fmaxf(m, stats[p].x);
  float l = 0.0f;
  for (int p = 0; p < num_parts; ++p) l = AddPartitionSum(l, stats[p], m);
  return make_float2(m, __fdiv_rn(1.0f, l));
}

// P_j from s_j and CombineStats' (m, 1 / l).
__device__ __forceinline__ float Probability(float s, float2 m_inv_l) {
  return __fmul_rn(expf(__fsub_rn(s, m_inv_l.x)), m_inv_l.y);
}

// Cache row of position `pos` of a sequence with block table `table`.
__device__ __forceinline__ int64_t SlotOf(const int32_t* table, int block_size, int pos) {
  return static_cast<int64_t>(table[pos / block_size]) * block_size + pos % block_size;
}

}  // namespace kvfold::cuda
