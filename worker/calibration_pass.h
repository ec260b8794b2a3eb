// The measuring half of `kvfold calibrate`: one pass of the unfolded model over calibration
// windows, gathering what the plan search needs (worker/plan_search.h).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/llama_model.h"
#include "worker/plan_search.h"

namespace kvfold {

struct CalibrationPassOptions {
  int chai_window = 5;           // tokens whose scores define a head's CHAI feature
  int tensor_parallel_size = 1;  // clusters never cross a shard of KV heads
  int share_sources = 3;         // best earlier layers kept per layer
};

// Runs `model` (its plan must be unfolded) over each window of token ids as one sequence and
// returns the statistics. `progress(done, total)` is called after each window.
absl::StatusOr<CalibrationStats> GatherCalibrationStats(
    LlamaModel& model, Ops& ops, absl::Span<const std::vector<int32_t>> windows,
    const CalibrationPassOptions& options, const std::function<void(int, int)>& progress = nullptr);

}  // namespace kvfold
