#include "worker/sequence_runner.h"

#include <numeric>

#include "absl/strings/str_format.h"

namespace kvfold {
namespace {

int32_t BlocksFor(int32_t tokens) {
  return std::max(1, (tokens + SequenceRunner::kBlockSize - 1) / SequenceRunner::kBlockSize);
}

}  // namespace

SequenceRunner::SequenceRunner(LlamaModel& model, Ops& ops, int32_t max_tokens, DType kv_dtype)
    : model_(model),
      capacity_(max_tokens),
      cache_(ops, model.kv_layer_shapes(), BlocksFor(max_tokens), kBlockSize, kv_dtype),
      block_table_(BlocksFor(max_tokens)) {
  std::iota(block_table_.begin(), block_table_.end(), 0);
}

absl::StatusOr<std::vector<float>> SequenceRunner::Append(absl::Span<const int32_t> token_ids,
                                                          bool all_logits) {
  const int32_t n = static_cast<int32_t>(token_ids.size());
  if (n == 0) return absl::InvalidArgumentError("no tokens to append");
  if (length_ + n > capacity_) {
    return absl::OutOfRangeError(
        absl::StrFormat("sequence of %d tokens exceeds the %d reserved", length_ + n, capacity_));
  }
  std::vector<int32_t> positions(n), logits_rows;
  std::vector<int64_t> slots(n);
  for (int32_t i = 0; i < n; ++i) {
    positions[i] = length_ + i;
    slots[i] = positions[i];  // blocks are 0, 1, 2, ...: slot == position
  }
  if (all_logits) {
    logits_rows.resize(n);
    std::iota(logits_rows.begin(), logits_rows.end(), 0);
  } else {
    logits_rows = {n - 1};
  }
  const int32_t query_start[] = {0, n};
  const int32_t context_len[] = {length_ + n};
  ForwardBatch batch;
  batch.token_ids = token_ids;
  batch.positions = positions;
  batch.attention.query_start = query_start;
  batch.attention.context_len = context_len;
  batch.attention.block_tables = block_table_;
  batch.attention.max_blocks_per_seq = static_cast<int32_t>(block_table_.size());
  batch.attention.slot_mapping = slots;
  batch.logits_rows = logits_rows;
  std::vector<float> logits(logits_rows.size() * static_cast<size_t>(model_.config().vocab_size));
  if (absl::Status s = model_.Forward(batch, cache_, logits.data()); !s.ok()) return s;
  length_ += n;
  return logits;
}

}  // namespace kvfold
