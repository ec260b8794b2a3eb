// worker/lockstep_batch: the batch of sequences advancing together over their own blocks, checked
// against the attention batch's definitions (a row's cache slot is block_table[pos / block_size] *
// block_size + pos % block_size; query rows of sequence s are [query_start[s], query_start[s+1])).
#include "worker/lockstep_batch.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(LockstepBatchTest, OneSequenceChunkMidway) {
  LockstepBatch batches(/*blocks_per_seq=*/3, /*block_size=*/4);
  const std::vector<int32_t> tokens = {11, 12, 13};
  const ForwardBatch b = batches.Append(tokens, /*start=*/5, LockstepBatch::Logits::kAll);
  EXPECT_THAT(b.token_ids, ElementsAre(11, 12, 13));
  EXPECT_THAT(b.positions, ElementsAre(5, 6, 7));
  EXPECT_THAT(b.attention.query_start, ElementsAre(0, 3));
  EXPECT_THAT(b.attention.context_len, ElementsAre(8));
  EXPECT_THAT(b.attention.block_tables, ElementsAre(0, 1, 2));
  EXPECT_EQ(b.attention.max_blocks_per_seq, 3);
  EXPECT_THAT(b.attention.slot_mapping, ElementsAre(5, 6, 7));
  EXPECT_THAT(b.logits_rows, ElementsAre(0, 1, 2));
}

TEST(LockstepBatchTest, SlotsFollowEachSequencesBlockTable) {
  constexpr int32_t kBlocks = 2, kBlockSize = 4, kSeqs = 3, kRows = 2, kStart = 3;
  LockstepBatch batches(kBlocks, kBlockSize, kSeqs);
  const std::vector<int32_t> tokens(kSeqs * kRows, 7);
  const ForwardBatch b = batches.Append(tokens, kStart, LockstepBatch::Logits::kLast);
  ASSERT_EQ(b.attention.num_seqs(), kSeqs);
  ASSERT_EQ(b.attention.block_tables.size(), static_cast<size_t>(kSeqs * kBlocks));
  EXPECT_THAT(b.attention.query_start, ElementsAre(0, 2, 4, 6));
  EXPECT_THAT(b.logits_rows, ElementsAre(1, 3, 5));
  for (int32_t s = 0; s < kSeqs; ++s) {
    EXPECT_EQ(b.attention.context_len[s], kStart + kRows);
    const auto table = b.attention.block_tables.subspan(s * kBlocks, kBlocks);
    for (int32_t row = b.attention.query_start[s]; row < b.attention.query_start[s + 1]; ++row) {
      const int32_t pos = b.positions[row];
      EXPECT_EQ(pos, kStart + row - b.attention.query_start[s]);
      EXPECT_EQ(b.attention.slot_mapping[row],
                int64_t{table[pos / kBlockSize]} * kBlockSize + pos % kBlockSize);
    }
  }
  // No two sequences share a block.
  std::vector<int32_t> sorted(b.attention.block_tables.begin(), b.attention.block_tables.end());
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
}

TEST(LockstepBatchTest, NoLogitsAndReuse) {
  LockstepBatch batches(1, 16);
  const std::vector<int32_t> first = {1, 2, 3, 4};
  EXPECT_THAT(batches.Append(first, 0, LockstepBatch::Logits::kNone).logits_rows, IsEmpty());
  const std::vector<int32_t> next = {5};
  const ForwardBatch b = batches.Append(next, 4, LockstepBatch::Logits::kLast);
  EXPECT_THAT(b.positions, ElementsAre(4));
  EXPECT_THAT(b.attention.slot_mapping, ElementsAre(4));
  EXPECT_THAT(b.attention.context_len, ElementsAre(5));
  EXPECT_THAT(b.logits_rows, ElementsAre(0));
}

}  // namespace
}  // namespace kvfold
