#include "worker/step_graph_batch.h"

#include <algorithm>

#include "glog/logging.h"
#include "worker/llama_model.h"

namespace kvfold {

int32_t ChooseBatchBucket(absl::Span<const int32_t> buckets, int32_t n) {
  if (n < 1) return 0;
  for (const int32_t b : buckets) {
    if (b >= n) return b;
  }
  return 0;
}

int32_t ChooseTableWidth(int32_t width, int32_t max_width) {
  if (width > max_width || max_width < 1) return 0;
  int32_t w = 1;
  while (w < width) w *= 2;
  return std::min(w, max_width);
}

bool IsDecodeStep(const ForwardBatch& batch) {
  const AttentionBatch& a = batch.attention;
  const size_t seqs = a.context_len.size();
  if (seqs == 0 || batch.token_ids.size() != seqs || batch.logits_rows.size() != seqs) return false;
  for (size_t s = 0; s < seqs; ++s) {
    if (a.query_start[s] != static_cast<int32_t>(s)) return false;
  }
  // Each row once: a graph's logits are its rows in logits_rows order.
  std::vector<bool> seen(seqs, false);
  for (const int32_t r : batch.logits_rows) {
    if (r < 0 || static_cast<size_t>(r) >= seqs || seen[r]) return false;
    seen[r] = true;
  }
  return true;
}

void PaddedDecodeBatch::Pad(const ForwardBatch& batch, int32_t rows, int32_t table_width) {
  const AttentionBatch& a = batch.attention;
  const auto n = static_cast<int32_t>(a.context_len.size());
  CHECK(n <= rows && a.max_blocks_per_seq <= table_width)
      << "Pad: " << n << " sequences x " << a.max_blocks_per_seq << " blocks into " << rows << " x "
      << table_width;
  max_blocks_per_seq = table_width;
  token_ids.assign(batch.token_ids.begin(), batch.token_ids.end());
  token_ids.resize(rows, 0);
  positions.assign(batch.positions.begin(), batch.positions.end());
  positions.resize(rows, 0);
  query_start.resize(rows + 1);
  for (int32_t s = 0; s <= rows; ++s) query_start[s] = s;
  context_len.assign(a.context_len.begin(), a.context_len.end());
  context_len.resize(rows, 1);  // a padding row attends to position 0 only
  block_tables.assign(static_cast<size_t>(rows) * table_width, 0);
  for (int32_t s = 0; s < n; ++s) {
    std::copy_n(a.block_tables.begin() + static_cast<size_t>(s) * a.max_blocks_per_seq,
                a.max_blocks_per_seq, block_tables.begin() + static_cast<size_t>(s) * table_width);
  }
  slot_mapping.assign(a.slot_mapping.begin(), a.slot_mapping.end());
  slot_mapping.resize(rows, -1);  // padding writes no K/V
  logits_rows.assign(batch.logits_rows.begin(), batch.logits_rows.end());
  for (int32_t r = n; r < rows; ++r) logits_rows.push_back(r);
}

}  // namespace kvfold
