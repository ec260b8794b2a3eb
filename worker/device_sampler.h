// Adapts the engine's sampling parameters and token histories to the device sampler's plain batch
// (kernels/cuda/sampling.h): one DeviceSamplingRow per row, logit_bias as a CSR list, and each
// row's history reduced to the distinct tokens the penalties touch, with their output counts.
#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "kernels/cuda/sampling.h"
#include "scheduler/request.h"
#include "worker/sampler.h"

namespace kvfold {

// One row to sample: Sample(logits row `logits_row`, *params, position, history) on the CPU.
struct DeviceSampleRequest {
  int32_t logits_row = 0;
  const SamplingParams* params = nullptr;
  uint64_t position = 0;
  TokenHistory history;  // read only when params->NeedsHistory()
};

// The batch that makes the device sampler pick what Sample() picks for each request. History
// tokens outside [0, vocab) are dropped, as the CPU sampler ignores them; prompt tokens are listed
// only under a repetition penalty.
DeviceSamplingBatch PackDeviceSamplingBatch(absl::Span<const DeviceSampleRequest> requests,
                                            int32_t vocab);

}  // namespace kvfold
