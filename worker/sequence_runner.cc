#include "worker/sequence_runner.h"

#include <algorithm>

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
      batch_(BlocksFor(max_tokens), kBlockSize) {}

absl::StatusOr<std::vector<float>> SequenceRunner::Append(absl::Span<const int32_t> token_ids,
                                                          bool all_logits) {
  const int32_t n = static_cast<int32_t>(token_ids.size());
  if (n == 0) return absl::InvalidArgumentError("no tokens to append");
  if (length_ + n > capacity_) {
    return absl::OutOfRangeError(
        absl::StrFormat("sequence of %d tokens exceeds the %d reserved", length_ + n, capacity_));
  }
  const ForwardBatch batch = batch_.Append(
      token_ids, length_, all_logits ? LockstepBatch::Logits::kAll : LockstepBatch::Logits::kLast);
  std::vector<float> logits(batch.logits_rows.size() *
                            static_cast<size_t>(model_.config().vocab_size));
  if (absl::Status s = model_.Forward(batch, cache_, logits.data()); !s.ok()) return s;
  length_ += n;
  return logits;
}

}  // namespace kvfold
