#include "worker/lockstep_batch.h"

#include <numeric>

#include "glog/logging.h"

namespace kvfold {

LockstepBatch::LockstepBatch(int32_t blocks_per_seq, int32_t block_size, int32_t num_seqs)
    : blocks_per_seq_(blocks_per_seq),
      block_size_(block_size),
      num_seqs_(num_seqs),
      block_tables_(static_cast<size_t>(num_seqs) * blocks_per_seq),
      query_start_(num_seqs + 1),
      context_len_(num_seqs) {
  std::iota(block_tables_.begin(), block_tables_.end(), 0);
}

ForwardBatch LockstepBatch::Append(absl::Span<const int32_t> token_ids, int32_t start,
                                   Logits logits) {
  const int32_t n = static_cast<int32_t>(token_ids.size()) / num_seqs_;
  DCHECK_EQ(static_cast<size_t>(n) * num_seqs_, token_ids.size());
  DCHECK_LE(start + n, blocks_per_seq_ * block_size_);
  positions_.resize(token_ids.size());
  slots_.resize(token_ids.size());
  for (int32_t s = 0; s < num_seqs_; ++s) {
    const int64_t first_slot = static_cast<int64_t>(s) * blocks_per_seq_ * block_size_;
    for (int32_t i = 0; i < n; ++i) {
      positions_[s * n + i] = start + i;
      slots_[s * n + i] = first_slot + start + i;
    }
    query_start_[s] = s * n;
    context_len_[s] = start + n;
  }
  query_start_[num_seqs_] = num_seqs_ * n;
  logits_rows_.clear();
  for (int32_t row = 0; row < num_seqs_ * n; ++row) {
    if (logits == Logits::kAll || (logits == Logits::kLast && row % n == n - 1)) {
      logits_rows_.push_back(row);
    }
  }
  ForwardBatch batch;
  batch.token_ids = token_ids;
  batch.positions = positions_;
  batch.attention.query_start = query_start_;
  batch.attention.context_len = context_len_;
  batch.attention.block_tables = block_tables_;
  batch.attention.max_blocks_per_seq = blocks_per_seq_;
  batch.attention.slot_mapping = slots_;
  batch.logits_rows = logits_rows_;
  return batch;
}

}  // namespace kvfold
