#include "worker/device_sampler.h"

#include <vector>

#include "absl/container/flat_hash_map.h"
#include "glog/logging.h"

namespace kvfold {

namespace {

// Appends the row's penalized tokens, each once in order of first appearance (prompt first).
void PackHistory(const SamplingParams& params, const TokenHistory& history, int32_t vocab,
                 DeviceSamplingBatch& batch) {
  if (!params.NeedsHistory()) return;
  const bool repetition = params.repetition_penalty != 1.0f;
  absl::flat_hash_map<int32_t, size_t> entry;  // token -> its index in history_tokens
  auto add = [&](int32_t t) -> size_t {
    auto [it, inserted] = entry.try_emplace(t, batch.history_tokens.size());
    if (inserted) {
      batch.history_tokens.push_back(t);
      batch.output_counts.push_back(0);
    }
    return it->second;
  };
  if (repetition) {
    for (int32_t t : history.prompt) {
      if (t >= 0 && t < vocab) add(t);
    }
  }
  for (int32_t t : history.output) {
    if (t >= 0 && t < vocab) ++batch.output_counts[add(t)];
  }
}

}  // namespace

DeviceSamplingBatch PackDeviceSamplingBatch(absl::Span<const DeviceSampleRequest> requests,
                                            int32_t vocab) {
  DeviceSamplingBatch batch;
  batch.rows.reserve(requests.size());
  for (const DeviceSampleRequest& r : requests) {
    CHECK(r.params != nullptr);
    const SamplingParams& p = *r.params;
    DeviceSamplingRow& row = batch.rows.emplace_back();
    row.logits_row = r.logits_row;
    row.temperature = p.temperature;
    row.top_k = p.top_k;
    row.top_p = p.top_p;
    row.min_p = p.min_p;
    row.repetition_penalty = p.repetition_penalty;
    row.frequency_penalty = p.frequency_penalty;
    row.presence_penalty = p.presence_penalty;
    row.seed = p.seed;
    row.position = r.position;
    for (const auto& [token, bias] : p.logit_bias) {
      if (token < 0 || token >= vocab) continue;
      batch.bias_tokens.push_back(token);
      batch.bias_values.push_back(bias);
    }
    batch.bias_offsets.push_back(static_cast<int32_t>(batch.bias_tokens.size()));
    PackHistory(p, r.history, vocab, batch);
    batch.history_offsets.push_back(static_cast<int32_t>(batch.history_tokens.size()));
  }
  return batch;
}

}  // namespace kvfold
