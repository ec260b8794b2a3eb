// Host side of step graphs: bucket and table-width choice, decode-step detection, the padded batch
// (worker/step_graph_batch.h), and the CPU backend's WriteKv skipping padding rows (slot -1).
#include "worker/step_graph_batch.h"

#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "worker/llama_model.h"

namespace kvfold {
namespace {

TEST(StepGraphBatchTest, BatchBucketIsTheSmallestThatFits) {
  const std::vector<int32_t> buckets = {1, 2, 4, 8, 16};
  EXPECT_EQ(ChooseBatchBucket(buckets, 1), 1);
  EXPECT_EQ(ChooseBatchBucket(buckets, 3), 4);
  EXPECT_EQ(ChooseBatchBucket(buckets, 8), 8);
  EXPECT_EQ(ChooseBatchBucket(buckets, 9), 16);
  EXPECT_EQ(ChooseBatchBucket(buckets, 17), 0);
  EXPECT_EQ(ChooseBatchBucket(buckets, 0), 0);
  EXPECT_EQ(ChooseBatchBucket({}, 1), 0);
}

TEST(StepGraphBatchTest, TableWidthIsThePowerOfTwoAboveCappedAtTheLongestTable) {
  EXPECT_EQ(ChooseTableWidth(1, 64), 1);
  EXPECT_EQ(ChooseTableWidth(3, 64), 4);
  EXPECT_EQ(ChooseTableWidth(5, 64), 8);
  EXPECT_EQ(ChooseTableWidth(33, 40), 40);
  EXPECT_EQ(ChooseTableWidth(40, 40), 40);
  EXPECT_EQ(ChooseTableWidth(41, 40), 0);
}

TEST(StepGraphBatchTest, KeysDifferByModelRowsAndWidth) {
  EXPECT_NE(StepGraphKey(0, 4, 8), StepGraphKey(0, 8, 4));
  EXPECT_NE(StepGraphKey(0, 4, 8), StepGraphKey(0, 4, 16));
  EXPECT_NE(StepGraphKey(0, 4, 8), StepGraphKey(1, 4, 8));
  EXPECT_NE(StepGraphKey(0, 1, kMaxStepGraphDim - 1), StepGraphKey(0, 2, 0));
  EXPECT_GE(StepGraphKey(0, 1, 1), 0);  // never Ops::kEagerRegion
}

// Two decode sequences: contexts 5 and 2 (block size 4), tables two blocks wide.
struct TwoSequences {
  std::vector<int32_t> tokens = {11, 12}, positions = {4, 1}, query_start = {0, 1, 2},
                       context = {5, 2}, tables = {3, 7, 9, 0}, logits_rows = {1, 0};
  std::vector<int64_t> slots = {7 * 4 + 0, 9 * 4 + 1};
  ForwardBatch Batch() const {
    ForwardBatch b;
    b.token_ids = tokens;
    b.positions = positions;
    b.attention.query_start = query_start;
    b.attention.context_len = context;
    b.attention.block_tables = tables;
    b.attention.max_blocks_per_seq = 2;
    b.attention.slot_mapping = slots;
    b.logits_rows = logits_rows;
    return b;
  }
};

TEST(StepGraphBatchTest, DecodeStepsAreRecognised) {
  TwoSequences s;
  EXPECT_TRUE(IsDecodeStep(s.Batch()));
  // A prompt chunk: sequence 0 has two query rows.
  std::vector<int32_t> tokens = {1, 2, 3}, positions = {0, 1, 1}, query_start = {0, 2, 3};
  ForwardBatch prefill = s.Batch();
  prefill.token_ids = tokens;
  prefill.positions = positions;
  prefill.attention.query_start = query_start;
  EXPECT_FALSE(IsDecodeStep(prefill));
  // Logits for one sequence only, or for one row twice.
  ForwardBatch partial = s.Batch();
  std::vector<int32_t> one = {0}, twice = {0, 0};
  partial.logits_rows = one;
  EXPECT_FALSE(IsDecodeStep(partial));
  partial.logits_rows = twice;
  EXPECT_FALSE(IsDecodeStep(partial));
}

TEST(StepGraphBatchTest, PaddingRowsReadPositionZeroOfBlockZeroAndWriteNothing) {
  TwoSequences s;
  PaddedDecodeBatch p;
  p.Pad(s.Batch(), /*rows=*/4, /*width=*/4);
  EXPECT_EQ(p.token_ids, (std::vector<int32_t>{11, 12, 0, 0}));
  EXPECT_EQ(p.positions, (std::vector<int32_t>{4, 1, 0, 0}));
  EXPECT_EQ(p.query_start, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(p.context_len, (std::vector<int32_t>{5, 2, 1, 1}));
  EXPECT_EQ(p.block_tables, (std::vector<int32_t>{3, 7, 0, 0, 9, 0, 0, 0,  //
                                                  0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(p.slot_mapping, (std::vector<int64_t>{28, 37, -1, -1}));
  // The real rows' logits first, in the caller's order; padding rows after.
  EXPECT_EQ(p.logits_rows, (std::vector<int32_t>{1, 0, 2, 3}));
  const ForwardBatch v = p.View();
  EXPECT_EQ(v.attention.max_blocks_per_seq, 4);
  EXPECT_EQ(v.attention.num_seqs(), 4);
  EXPECT_TRUE(IsDecodeStep(v));
}

TEST(StepGraphBatchTest, CpuWriteKvSkipsNegativeSlots) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  constexpr int kSlots = 4, kWidth = 2;
  std::vector<float> k_cache(kSlots * kWidth, -1.0f), v_cache(kSlots * kWidth, -2.0f);
  KvCacheLayer cache{{k_cache.data(), DType::kF32, kSlots, kWidth},
                     {v_cache.data(), DType::kF32, kSlots, kWidth},
                     /*block_size=*/kSlots,
                     /*num_k_heads=*/1,
                     /*num_v_heads=*/1,
                     /*head_dim=*/kWidth};
  std::vector<float> k = {1, 2, 3, 4, 5, 6}, v = {10, 20, 30, 40, 50, 60};
  std::vector<int64_t> slots = {2, -1, 0};
  AttentionBatch batch;
  batch.slot_mapping = slots;
  ops->WriteKv({k.data(), DType::kF32, 3, kWidth}, {v.data(), DType::kF32, 3, kWidth}, batch,
               cache);
  EXPECT_EQ(k_cache, (std::vector<float>{5, 6, -1, -1, 1, 2, -1, -1}));
  EXPECT_EQ(v_cache, (std::vector<float>{50, 60, -2, -2, 10, 20, -2, -2}));
}

}  // namespace
}  // namespace kvfold
