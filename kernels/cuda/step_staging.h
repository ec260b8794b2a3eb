// Ops::StageStepInputs for the CUDA backend: a step's host arrays packed into one pinned buffer and
// copied with one cudaMemcpyAsync into a device region, which later op calls of the step read
// instead of uploading their own copy. Graph regions keep their device address for the graph's
// life, so a replay reads the newly staged values where its capture recorded the old ones.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "kernels/ops.h"

namespace kvfold::cuda {

class StepStaging {
 public:
  StepStaging() = default;
  ~StepStaging();
  StepStaging(const StepStaging&) = delete;
  StepStaging& operator=(const StepStaging&) = delete;

  // Stages `arrays` and `attention`'s (block tables, slot mapping, per-row sequence and position)
  // into `region` and queues the copy on `stream`. Returns whether the region moved (grew), which
  // invalidates a graph captured against it.
  bool Stage(absl::Span<const HostArray> arrays, const AttentionBatch* attention, int64_t region,
             cudaStream_t stream);
  // Forgets the staged spans (the device copies stay until the next Stage overwrites them).
  void Clear() { entries_.clear(), rows_.reset(); }

  // The device copy of a staged host span, or null when `host` was not staged this step.
  template <typename T>
  const T* Find(absl::Span<const T> host) const {
    return static_cast<const T*>(FindBytes(host.data(), host.size() * sizeof(T)));
  }
  // Each query row's sequence and position for a staged attention batch; nullopt otherwise.
  struct RowPlacement {
    const int32_t* seq = nullptr;
    const int32_t* pos = nullptr;
  };
  std::optional<RowPlacement> FindRows(const AttentionBatch& batch) const;
  // Whether anything is staged (between Stage and Clear).
  bool active() const { return !entries_.empty() || rows_.has_value(); }

 private:
  struct Entry {
    const void* host;
    size_t bytes;
    const void* device;
  };
  struct Region {
    void* device = nullptr;
    size_t capacity = 0;
  };
  const void* FindBytes(const void* host, size_t bytes) const;

  std::map<int64_t, Region> regions_;
  char* pinned_ = nullptr;
  size_t pinned_capacity_ = 0;
  cudaEvent_t copied_ = nullptr;  // the last staging copy, which reads pinned_
  std::vector<char> pack_;
  std::vector<int32_t> row_seq_, row_pos_;
  std::vector<Entry> entries_;
  // The staged attention batch (identified by its spans' addresses) and its rows' device copies.
  struct StagedRows {
    const int32_t* query_start;
    const int32_t* context_len;
    size_t num_seqs;
    RowPlacement device;
  };
  std::optional<StagedRows> rows_;
};

}  // namespace kvfold::cuda
