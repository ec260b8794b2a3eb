// The rank-order sum behind NcclCommunicator::AllReduceSum: out[i] = ((g[0][i] + g[1][i]) + ...)
// over the `ranks` rows of the all-gathered g, [ranks, count] row-major, all on the device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace kvfold {

// Enqueues the sum on `stream`; returns the launch's error (cudaSuccess when queued).
cudaError_t LaunchRankOrderSum(const float* gathered, int ranks, size_t count, float* out,
                               cudaStream_t stream);

}  // namespace kvfold
