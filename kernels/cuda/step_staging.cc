#include "kernels/cuda/step_staging.h"

#include <algorithm>
#include <cstring>

#include "kernels/cuda/cuda_check.h"

namespace kvfold::cuda {
namespace {

constexpr size_t kAlign = 16;

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Appends `bytes` bytes at a 16-byte boundary of `pack`; returns their offset.
size_t Append(std::vector<char>& pack, const void* data, size_t bytes) {
  const size_t offset = AlignUp(pack.size());
  pack.resize(offset + bytes);
  if (bytes > 0) std::memcpy(pack.data() + offset, data, bytes);
  return offset;
}

void CheckNotCapturing(cudaStream_t stream, const char* what) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  KVFOLD_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  CHECK(status == cudaStreamCaptureStatusNone) << what << " while a step graph is being captured";
}

}  // namespace

StepStaging::~StepStaging() {
  // Destruction follows the owner's stream synchronisation (CudaOps' destructor).
  for (auto& [key, region] : regions_) {
    if (region.device != nullptr) cudaFree(region.device);
  }
  if (pinned_ != nullptr) cudaFreeHost(pinned_);
  if (copied_ != nullptr) cudaEventDestroy(copied_);
}

bool StepStaging::Stage(absl::Span<const HostArray> arrays, const AttentionBatch* attention,
                        int64_t region, cudaStream_t stream) {
  CheckNotCapturing(stream, "StageStepInputs");
  Clear();
  // Lay everything out once on the host; the device offsets are the pack's.
  pack_.clear();
  struct Placed {
    const void* host;
    size_t bytes, offset;
  };
  std::vector<Placed> placed;
  placed.reserve(arrays.size() + 2);
  for (const HostArray& a : arrays) {
    if (a.bytes == 0) continue;
    placed.push_back({a.data, a.bytes, Append(pack_, a.data, a.bytes)});
  }
  size_t seq_offset = 0, pos_offset = 0;
  if (attention != nullptr) {
    for (const HostArray a :
         {HostArray::Of(attention->block_tables), HostArray::Of(attention->slot_mapping)}) {
      if (a.bytes > 0) placed.push_back({a.data, a.bytes, Append(pack_, a.data, a.bytes)});
    }
    row_seq_.clear();
    row_pos_.clear();
    for (int32_t s = 0; s < attention->num_seqs(); ++s) {
      const int32_t q_len = attention->query_start[s + 1] - attention->query_start[s];
      for (int32_t j = 0; j < q_len; ++j) {
        row_seq_.push_back(s);
        row_pos_.push_back(attention->context_len[s] - q_len + j);
      }
    }
    seq_offset = Append(pack_, row_seq_.data(), row_seq_.size() * sizeof(int32_t));
    pos_offset = Append(pack_, row_pos_.data(), row_pos_.size() * sizeof(int32_t));
  }
  const size_t bytes = std::max<size_t>(pack_.size(), kAlign);

  // The previous staging copy reads pinned_ asynchronously: wait for it before rewriting.
  if (copied_ == nullptr) {
    KVFOLD_CUDA_CHECK(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming));
  } else {
    KVFOLD_CUDA_CHECK(cudaEventSynchronize(copied_));
  }
  if (bytes > pinned_capacity_) {
    if (pinned_ != nullptr) KVFOLD_CUDA_CHECK(cudaFreeHost(pinned_));
    pinned_capacity_ = std::max(bytes, 2 * pinned_capacity_);
    KVFOLD_CUDA_CHECK(
        cudaHostAlloc(reinterpret_cast<void**>(&pinned_), pinned_capacity_, cudaHostAllocDefault));
  }
  std::memcpy(pinned_, pack_.data(), pack_.size());

  Region& r = regions_[region];
  bool moved = false;
  if (bytes > r.capacity) {
    if (r.device != nullptr) {
      // Queued kernels (or a graph) may still read the old region.
      KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream));
      KVFOLD_CUDA_CHECK(cudaFree(r.device));
    }
    // Graph regions are sized exactly (their layout is fixed); the eager one doubles.
    r.capacity = region == Ops::kEagerRegion ? std::max(bytes, 2 * r.capacity) : bytes;
    KVFOLD_CUDA_CHECK(cudaMalloc(&r.device, r.capacity));
    moved = true;
  }
  KVFOLD_CUDA_CHECK(
      cudaMemcpyAsync(r.device, pinned_, pack_.size(), cudaMemcpyHostToDevice, stream));
  KVFOLD_CUDA_CHECK(cudaEventRecord(copied_, stream));

  const char* base = static_cast<const char*>(r.device);
  for (const Placed& p : placed) entries_.push_back({p.host, p.bytes, base + p.offset});
  if (attention != nullptr) {
    rows_ = StagedRows{attention->query_start.data(),
                       attention->context_len.data(),
                       attention->context_len.size(),
                       {reinterpret_cast<const int32_t*>(base + seq_offset),
                        reinterpret_cast<const int32_t*>(base + pos_offset)}};
  }
  return moved;
}

const void* StepStaging::FindBytes(const void* host, size_t bytes) const {
  if (bytes == 0) return nullptr;
  for (const Entry& e : entries_) {
    if (e.host == host && e.bytes == bytes) return e.device;
  }
  return nullptr;
}

std::optional<StepStaging::RowPlacement> StepStaging::FindRows(const AttentionBatch& batch) const {
  if (!rows_.has_value() || rows_->query_start != batch.query_start.data() ||
      rows_->context_len != batch.context_len.data() ||
      rows_->num_seqs != batch.context_len.size()) {
    return std::nullopt;
  }
  return rows_->device;
}

}  // namespace kvfold::cuda
