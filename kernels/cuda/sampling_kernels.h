// Launcher of the device sampler's kernels (sampling.h). Internal to kernels/cuda: every pointer is
// a device pointer and the batch was validated by the caller.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/sampling.h"

#ifdef __CUDACC__
#define KVFOLD_HOST_DEVICE __host__ __device__
#else
#define KVFOLD_HOST_DEVICE
#endif

namespace kvfold::cuda {

// The CPU sampler filters by top_k only when 0 < top_k < vocab, by top_p only when top_p < 1, and
// neither when greedy.
KVFOLD_HOST_DEVICE inline bool TopKActive(const DeviceSamplingRow& r, int64_t vocab) {
  return r.temperature > 0.0f && r.top_k > 0 && r.top_k < vocab;
}
KVFOLD_HOST_DEVICE inline bool TopPActive(const DeviceSamplingRow& r) {
  return r.temperature > 0.0f && r.top_p < 1.0f;
}

struct SamplingLaunch {
  const float* logits = nullptr;  // [*, vocab]
  int64_t vocab = 0;
  int32_t num_rows = 0;
  const DeviceSamplingRow* rows = nullptr;  // [num_rows]
  const int32_t* bias_offsets = nullptr;    // [num_rows + 1]
  const int32_t* bias_tokens = nullptr;
  const float* bias_values = nullptr;
  const int32_t* history_offsets = nullptr;  // [num_rows + 1]
  const int32_t* history_tokens = nullptr;
  const int32_t* output_counts = nullptr;
  // Scratch, [num_rows, vocab] each; keys and ids only when a row sorts.
  float* processed = nullptr;
  double* probs = nullptr;
  uint64_t* keys_in = nullptr;
  uint64_t* keys_out = nullptr;
  int32_t* ids_in = nullptr;
  int32_t* ids_out = nullptr;
  // Segments of the two sorts, [num_rows] each: row r's is [r * vocab, end[r]), empty when the
  // row does not filter by top_k (top_p).
  const int64_t* sort_begin = nullptr;
  const int64_t* top_k_end = nullptr;
  const int64_t* top_p_end = nullptr;
  bool any_top_k = false;
  bool any_top_p = false;
  void* sort_temp = nullptr;
  size_t sort_temp_bytes = 0;
  int32_t* tokens = nullptr;  // [num_rows]
};

// Scratch bytes the sorts need for num_rows x vocab keys.
size_t SamplingSortTempBytes(int32_t num_rows, int64_t vocab);
void LaunchSampling(const SamplingLaunch& launch, cudaStream_t stream);

}  // namespace kvfold::cuda
