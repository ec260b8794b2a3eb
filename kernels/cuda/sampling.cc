#include "kernels/cuda/sampling.h"

#include <cuda_runtime_api.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/arg_pack.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/sampling_kernels.h"

namespace kvfold {

namespace {

absl::Status CheckOffsets(const std::vector<int32_t>& offsets, size_t rows, size_t entries,
                          const char* what) {
  if (offsets.size() != rows + 1 || offsets.front() != 0 ||
      static_cast<size_t>(offsets.back()) != entries) {
    return absl::InvalidArgumentError(absl::StrCat(what, " offsets do not cover the batch"));
  }
  for (size_t r = 0; r < rows; ++r) {
    if (offsets[r] > offsets[r + 1]) {
      return absl::InvalidArgumentError(absl::StrCat(what, " offsets decrease at row ", r));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateDeviceSamplingBatch(const DeviceSamplingBatch& b, int64_t num_logit_rows,
                                         int64_t vocab) {
  if (vocab <= 0 || vocab > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary of ", vocab, " tokens"));
  }
  const size_t rows = b.rows.size();
  if (b.bias_values.size() != b.bias_tokens.size() ||
      b.output_counts.size() != b.history_tokens.size()) {
    return absl::InvalidArgumentError("sampling batch lists of different lengths");
  }
  if (absl::Status s = CheckOffsets(b.bias_offsets, rows, b.bias_tokens.size(), "logit_bias");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckOffsets(b.history_offsets, rows, b.history_tokens.size(), "history");
      !s.ok()) {
    return s;
  }
  for (const DeviceSamplingRow& r : b.rows) {
    if (r.logits_row < 0 || r.logits_row >= num_logit_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("logits row ", r.logits_row, " outside [0, ", num_logit_rows, ")"));
    }
  }
  return absl::OkStatus();
}

namespace cuda {
namespace {

// Device scratch grown to the largest batch seen; one stream of its own.
class CudaSampler final : public DeviceSampler {
 public:
  // `logits_ready` (may be null) is an event recorded on `wait_stream` before each call.
  CudaSampler(int device_ordinal, cudaStream_t stream, cudaStream_t wait_stream,
              cudaEvent_t logits_ready)
      : device_ordinal_(device_ordinal),
        stream_(stream),
        wait_stream_(wait_stream),
        logits_ready_(logits_ready) {}
  ~CudaSampler() override {
    KVFOLD_CUDA_CHECK(cudaSetDevice(device_ordinal_));
    KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (logits_ready_ != nullptr) KVFOLD_CUDA_CHECK(cudaEventDestroy(logits_ready_));
    KVFOLD_CUDA_CHECK(cudaStreamDestroy(stream_));
  }

  absl::Status Sample(const float* logits, int64_t num_logit_rows, int64_t vocab,
                      const DeviceSamplingBatch& batch, absl::Span<int32_t> tokens) override;
  absl::Status CopyRowsToHost(const float* logits, int64_t num_logit_rows, int64_t vocab,
                              absl::Span<const int32_t> rows, float* host) override;

 private:
  // The logits come from another stream. With the stream that writes them, this stream waits (on
  // the device) for the work queued there so far; without, the host waits for the whole device.
  void WaitForLogits() const {
    KVFOLD_CUDA_CHECK(cudaSetDevice(device_ordinal_));
    if (wait_stream_ == nullptr) {
      KVFOLD_CUDA_CHECK(cudaDeviceSynchronize());
      return;
    }
    KVFOLD_CUDA_CHECK(cudaEventRecord(logits_ready_, wait_stream_));
    KVFOLD_CUDA_CHECK(cudaStreamWaitEvent(stream_, logits_ready_, 0));
  }

  int device_ordinal_;
  cudaStream_t stream_;
  cudaStream_t wait_stream_;
  cudaEvent_t logits_ready_;
  DeviceBuffer args_, processed_, probs_, keys_in_, keys_out_, ids_in_, ids_out_, sort_temp_,
      tokens_;
};

absl::Status CudaSampler::Sample(const float* logits, int64_t num_logit_rows, int64_t vocab,
                                 const DeviceSamplingBatch& batch, absl::Span<int32_t> tokens) {
  if (absl::Status s = ValidateDeviceSamplingBatch(batch, num_logit_rows, vocab); !s.ok()) return s;
  if (tokens.size() != batch.rows.size()) {
    return absl::InvalidArgumentError("one token slot per sampling row");
  }
  const auto num_rows = static_cast<int32_t>(batch.rows.size());
  if (num_rows == 0) return absl::OkStatus();
  WaitForLogits();

  SamplingLaunch l;
  l.logits = logits;
  l.vocab = vocab;
  l.num_rows = num_rows;
  std::vector<int64_t> sort_begin(num_rows), top_k_end(num_rows), top_p_end(num_rows);
  for (int32_t r = 0; r < num_rows; ++r) {
    const DeviceSamplingRow& row = batch.rows[r];
    sort_begin[r] = int64_t{r} * vocab;
    top_k_end[r] = sort_begin[r] + (TopKActive(row, vocab) ? vocab : 0);
    top_p_end[r] = sort_begin[r] + (TopPActive(row) ? vocab : 0);
    l.any_top_k = l.any_top_k || TopKActive(row, vocab);
    l.any_top_p = l.any_top_p || TopPActive(row);
  }
  ArgPack pack;
  const size_t rows_at = pack.Add(absl::MakeConstSpan(batch.rows));
  const size_t bias_offsets_at = pack.Add(absl::MakeConstSpan(batch.bias_offsets));
  const size_t bias_tokens_at = pack.Add(absl::MakeConstSpan(batch.bias_tokens));
  const size_t bias_values_at = pack.Add(absl::MakeConstSpan(batch.bias_values));
  const size_t history_offsets_at = pack.Add(absl::MakeConstSpan(batch.history_offsets));
  const size_t history_tokens_at = pack.Add(absl::MakeConstSpan(batch.history_tokens));
  const size_t output_counts_at = pack.Add(absl::MakeConstSpan(batch.output_counts));
  const size_t sort_begin_at = pack.Add(absl::MakeConstSpan(sort_begin));
  const size_t top_k_end_at = pack.Add(absl::MakeConstSpan(top_k_end));
  const size_t top_p_end_at = pack.Add(absl::MakeConstSpan(top_p_end));
  char* base = static_cast<char*>(args_.Reserve(pack.size(), stream_));
  KVFOLD_CUDA_CHECK(
      cudaMemcpyAsync(base, pack.data(), pack.size(), cudaMemcpyHostToDevice, stream_));
  l.rows = PackedAt<DeviceSamplingRow>(base, rows_at);
  l.bias_offsets = PackedAt<int32_t>(base, bias_offsets_at);
  l.bias_tokens = PackedAt<int32_t>(base, bias_tokens_at);
  l.bias_values = PackedAt<float>(base, bias_values_at);
  l.history_offsets = PackedAt<int32_t>(base, history_offsets_at);
  l.history_tokens = PackedAt<int32_t>(base, history_tokens_at);
  l.output_counts = PackedAt<int32_t>(base, output_counts_at);
  l.sort_begin = PackedAt<int64_t>(base, sort_begin_at);
  l.top_k_end = PackedAt<int64_t>(base, top_k_end_at);
  l.top_p_end = PackedAt<int64_t>(base, top_p_end_at);

  const size_t cells = static_cast<size_t>(num_rows) * static_cast<size_t>(vocab);
  l.processed = static_cast<float*>(processed_.Reserve(cells * sizeof(float), stream_));
  l.probs = static_cast<double*>(probs_.Reserve(cells * sizeof(double), stream_));
  if (l.any_top_k || l.any_top_p) {
    l.keys_in = static_cast<uint64_t*>(keys_in_.Reserve(cells * sizeof(uint64_t), stream_));
    l.keys_out = static_cast<uint64_t*>(keys_out_.Reserve(cells * sizeof(uint64_t), stream_));
    l.ids_in = static_cast<int32_t*>(ids_in_.Reserve(cells * sizeof(int32_t), stream_));
    l.ids_out = static_cast<int32_t*>(ids_out_.Reserve(cells * sizeof(int32_t), stream_));
    l.sort_temp_bytes = SamplingSortTempBytes(num_rows, vocab);
    l.sort_temp = sort_temp_.Reserve(l.sort_temp_bytes, stream_);
  }
  l.tokens = static_cast<int32_t*>(tokens_.Reserve(num_rows * sizeof(int32_t), stream_));
  LaunchSampling(l, stream_);
  KVFOLD_CUDA_CHECK(cudaMemcpyAsync(tokens.data(), l.tokens, num_rows * sizeof(int32_t),
                                    cudaMemcpyDeviceToHost, stream_));
  KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaSampler::CopyRowsToHost(const float* logits, int64_t num_logit_rows, int64_t vocab,
                                         absl::Span<const int32_t> rows, float* host) {
  for (int32_t r : rows) {
    if (r < 0 || r >= num_logit_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("logits row ", r, " outside [0, ", num_logit_rows, ")"));
    }
  }
  if (rows.empty()) return absl::OkStatus();
  WaitForLogits();
  const size_t row_bytes = static_cast<size_t>(vocab) * sizeof(float);
  for (size_t i = 0; i < rows.size(); ++i) {
    KVFOLD_CUDA_CHECK(cudaMemcpyAsync(host + i * vocab, logits + int64_t{rows[i]} * vocab,
                                      row_bytes, cudaMemcpyDeviceToHost, stream_));
  }
  KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

}  // namespace
}  // namespace cuda

absl::StatusOr<std::unique_ptr<DeviceSampler>> NewCudaSampler(int device_ordinal,
                                                              void* wait_stream) {
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return absl::UnavailableError("CUDA: no usable device");
  }
  if (device_ordinal < 0 || device_ordinal >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA: device ", device_ordinal, " outside [0, ", count, ")"));
  }
  if (const cudaError_t e = cudaSetDevice(device_ordinal); e != cudaSuccess) {
    return absl::UnavailableError(std::string("cudaSetDevice: ") + cudaGetErrorString(e));
  }
  cudaStream_t stream = nullptr;
  if (const cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
      e != cudaSuccess) {
    return absl::UnavailableError(std::string("cudaStreamCreate: ") + cudaGetErrorString(e));
  }
  cudaEvent_t logits_ready = nullptr;
  if (wait_stream != nullptr) {
    if (const cudaError_t e = cudaEventCreateWithFlags(&logits_ready, cudaEventDisableTiming);
        e != cudaSuccess) {
      cudaStreamDestroy(stream);
      return absl::UnavailableError(std::string("cudaEventCreate: ") + cudaGetErrorString(e));
    }
  }
  return std::make_unique<cuda::CudaSampler>(device_ordinal, stream,
                                             static_cast<cudaStream_t>(wait_stream), logits_ready);
}

}  // namespace kvfold
