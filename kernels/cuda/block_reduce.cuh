// Deterministic warp and block reductions: a fixed butterfly over lanes, then warp partials summed
// in warp order. The result depends only on the inputs and the block size, never on timing.
#pragma once

namespace kvfold::cuda {

inline constexpr int kWarpSize = 32;

// Every lane returns the same sum: at each step lanes i and i^offset add the same two values.
__device__ __forceinline__ float WarpSum(float value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Sum over the whole block, returned to every thread. `scratch` holds one float per warp; the
// block size must be a multiple of the warp size. Contains __syncthreads(): call from all threads.
__device__ __forceinline__ float BlockSum(float value, float* scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  value = WarpSum(value);
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < num_warps; ++w) total += scratch[w];
  __syncthreads();  // scratch may be reused right after return
  return total;
}

}  // namespace kvfold::cuda
