// The step a tensor-parallel leader sends its followers (worker/step_transport.h): a batch and
// the KV cache geometry copied into flat arrays and viewed back, malformed steps refused, and the
// one-node transport (worker/step_broadcast.h) carrying a step and the finish marker between two
// gloo ranks. The multi-node transport is tested in cluster_test.cc.
#include "worker/step_transport.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "worker/gloo_communicator.h"
#include "worker/kv_cache.h"
#include "worker/step_broadcast.h"

namespace kvfold {
namespace {

// Arrays of a two-sequence step (a 2-token prefill chunk and a decode), their values arbitrary
// but distinct, an int64 slot above 2^32 included.
struct SomeBatch {
  std::vector<int32_t> ids = {11, 12, 13}, positions = {4, 5, 0}, starts = {0, 2, 3},
                       context = {6, 1}, tables = {3, 1, 2, -1}, rows = {1, 2};
  std::vector<int64_t> slots = {(int64_t{1} << 40) + 7, 9, 12};

  ForwardBatch batch() const {
    ForwardBatch b;
    b.token_ids = ids;
    b.positions = positions;
    b.attention.query_start = starts;
    b.attention.context_len = context;
    b.attention.block_tables = tables;
    b.attention.max_blocks_per_seq = 2;
    b.attention.slot_mapping = slots;
    b.logits_rows = rows;
    return b;
  }
};

TEST(StepMessageTest, CopiesTheBatchAndTheCacheGeometry) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  KvCache cache(*ops, std::vector<KvLayerShape>{{1, 1, 4}}, 5, 2);
  const SomeBatch in;
  const StepMessage m = StepMessage::Of(in.batch(), cache);
  EXPECT_FALSE(m.finish);
  EXPECT_EQ(m.token_ids, in.ids);
  EXPECT_EQ(m.positions, in.positions);
  EXPECT_EQ(m.query_start, in.starts);
  EXPECT_EQ(m.context_len, in.context);
  EXPECT_EQ(m.block_tables, in.tables);
  EXPECT_EQ(m.max_blocks_per_seq, 2);
  EXPECT_EQ(m.slot_mapping, in.slots);
  EXPECT_EQ(m.logits_rows, in.rows);
  EXPECT_EQ(m.cache_blocks, 5);
  EXPECT_EQ(m.cache_block_size, 2);
  EXPECT_EQ(m.cache_dtype, static_cast<int32_t>(DType::kF32));
  EXPECT_TRUE(m.Validate().ok());

  const ForwardBatch view = m.batch();
  EXPECT_EQ(std::vector<int32_t>(view.token_ids.begin(), view.token_ids.end()), in.ids);
  EXPECT_EQ(
      std::vector<int64_t>(view.attention.slot_mapping.begin(), view.attention.slot_mapping.end()),
      in.slots);
  EXPECT_EQ(view.attention.num_seqs(), 2);
  EXPECT_EQ(view.attention.max_blocks_per_seq, 2);
}

TEST(StepMessageTest, RefusesArraysThatDisagree) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  KvCache cache(*ops, std::vector<KvLayerShape>{{1, 1, 4}}, 5, 2);
  const StepMessage good = StepMessage::Of(SomeBatch().batch(), cache);
  StepMessage m = good;
  m.positions.pop_back();
  EXPECT_EQ(m.Validate().code(), absl::StatusCode::kInternal);
  m = good;
  m.query_start.pop_back();
  EXPECT_FALSE(m.Validate().ok());
  m = good;
  m.max_blocks_per_seq = 3;
  EXPECT_FALSE(m.Validate().ok());
  m = good;
  m.cache_blocks = 0;
  EXPECT_FALSE(m.Validate().ok());
  EXPECT_TRUE(StepMessage::Finish().Validate().ok());
}

TEST(BroadcastStepTest, CarriesAStepAndTheFinishMarkerBetweenTwoRanks) {
  char pattern[] = "/tmp/kvfold_step_test_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  KvCache cache(*ops, std::vector<KvLayerShape>{{1, 1, 4}}, 5, 2);
  const SomeBatch in;
  absl::Status sent, received;
  StepMessage first, second;
  auto rank = [&](int r) {
    GlooOptions options;
    options.rank = r;
    options.size = 2;
    options.timeout = std::chrono::seconds(30);
    absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
        GlooCommunicator::CreateWithFileStore(options, dir);
    absl::Status& result = r == 0 ? sent : received;
    if (!comm.ok()) {
      result = comm.status();
      return;
    }
    if (r == 0) {
      BroadcastStepSink sink(**comm);
      result = sink.Send(in.batch(), cache);
      if (result.ok()) result = sink.Finish();
    } else {
      BroadcastStepSource source(**comm);
      result = source.Next(first);
      if (result.ok()) result = source.Next(second);
    }
  };
  std::thread leader(rank, 0), follower(rank, 1);
  leader.join();
  follower.join();
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(sent.ok()) << sent;
  ASSERT_TRUE(received.ok()) << received;
  EXPECT_EQ(first, StepMessage::Of(in.batch(), cache));
  EXPECT_TRUE(second.finish);
}

}  // namespace
}  // namespace kvfold
