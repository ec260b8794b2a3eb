// Sampling on the device: one token per row of device logits, so a decode step copies back token
// ids instead of rows x vocab floats. It picks the CPU sampler's token (worker/sampler.h) for the
// same row and parameters: the same processor order (logit_bias -> repetition / frequency /
// presence penalties -> temperature or greedy -> top_k -> top_p -> min_p -> one draw in token-id
// order), the same float formulas without contraction, double probabilities, the same
// CounterUniform(seed, position) in 64-bit integer math, greedy = argmax with the lowest id on
// ties, top_k by (logit desc, id asc), top_p over the survivors by (prob desc, id asc) keeping the
// smallest prefix with mass >= top_p * total, and min_p against the highest probability.
//
// Where the two can differ: the device sums probabilities (top_p's total and prefix, the
// normalizing total, the draw's cumulative sum) in a fixed parallel order (sequential per thread
// chunk, then a CUB block scan/reduce), which rounds differently from the CPU's sequential sums,
// and CUDA's double exp() may differ from glibc's in the last bit. Both move a boundary by ~1e-16
// relative, so a different token needs the uniform (a multiple of 2^-24) or top_p * total to land
// within ~1e-12 of a boundary. Logits are assumed finite (no NaN).
//
// Device scratch grows to the largest batch seen: 12 bytes per row x vocab cell, about 48 when a
// row filters by top_k or top_p (the sorts; ~1.6 GB at 256 x 128256). Those sorts are CUB segmented
// sorts of whole rows, one block per row: the first thing to speed up (e.g. sort only candidates
// above a safe probability bound).
//
// This header needs no CUDA: the worker packs DeviceSamplingBatch in CPU builds too.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvfold {

// One row's parameters; the fields mean what SamplingParams's (scheduler/request.h) do.
struct DeviceSamplingRow {
  int32_t logits_row = 0;    // which row of the logits matrix this row samples from
  float temperature = 0.0f;  // <= 0: greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  uint64_t seed = 0;
  uint64_t position = 0;  // the token's index among the request's outputs
};

// A batch of rows with their lists in CSR form: row r's entries are [offsets[r], offsets[r + 1]).
struct DeviceSamplingBatch {
  std::vector<DeviceSamplingRow> rows;
  // logit_bias, added in list order (ids outside the vocabulary are ignored).
  std::vector<int32_t> bias_offsets = {0};
  std::vector<int32_t> bias_tokens;
  std::vector<float> bias_values;
  // The row's penalized tokens, each once, in [0, vocab): the repetition penalty applies to every
  // entry (so list prompt tokens only when it is on), frequency and presence to entries whose
  // output_count (occurrences among the outputs so far) is > 0.
  std::vector<int32_t> history_offsets = {0};
  std::vector<int32_t> history_tokens;
  std::vector<int32_t> output_counts;
};

// InvalidArgument when the batch's arrays disagree (sizes, offsets) or a row is out of range.
absl::Status ValidateDeviceSamplingBatch(const DeviceSamplingBatch& batch, int64_t num_logit_rows,
                                         int64_t vocab);

class DeviceSampler {
 public:
  virtual ~DeviceSampler() = default;
  // `logits` is a device array [num_logit_rows, vocab] of F32, possibly written by work queued on
  // another stream: the call first waits for that work (NewCudaSampler). Returns once `tokens`
  // (one per batch row) holds the sampled ids.
  virtual absl::Status Sample(const float* logits, int64_t num_logit_rows, int64_t vocab,
                              const DeviceSamplingBatch& batch, absl::Span<int32_t> tokens) = 0;
  // Copies rows `rows` of `logits` (as above) to `host`, one after another.
  virtual absl::Status CopyRowsToHost(const float* logits, int64_t num_logit_rows, int64_t vocab,
                                      absl::Span<const int32_t> rows, float* host) = 0;
};

// A sampler with its own stream on device `device_ordinal` (CUDA builds only: kvfold_kernels_cuda).
// `wait_stream` is the cudaStream_t that writes the logits (CudaOpsStream(ops)): each call orders
// its work after what is queued there, through an event, without blocking the host. Null: each
// call waits for the whole device (cudaDeviceSynchronize).
absl::StatusOr<std::unique_ptr<DeviceSampler>> NewCudaSampler(int device_ordinal = 0,
                                                              void* wait_stream = nullptr);

}  // namespace kvfold
