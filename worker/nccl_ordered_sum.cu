#include "worker/nccl_ordered_sum.h"

namespace kvfold {
namespace {

// One thread per element (grid-stride); each adds the ranks in order, one rounding per add (no
// fused multiply-add can arise from plain additions).
__global__ void RankOrderSumKernel(const float* gathered, int ranks, size_t count, float* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float sum = gathered[i];
    for (int r = 1; r < ranks; ++r) sum = __fadd_rn(sum, gathered[r * count + i]);
    out[i] = sum;
  }
}

}  // namespace

cudaError_t LaunchRankOrderSum(const float* gathered, int ranks, size_t count, float* out,
                               cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const size_t blocks = (count + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  RankOrderSumKernel<<<grid, kThreads, 0, stream>>>(gathered, ranks, count, out);
  return cudaGetLastError();
}

}  // namespace kvfold
