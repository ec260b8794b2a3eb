// The GPU memory plan's arithmetic (worker/gpu_memory_plan.h), with device numbers written out,
// and the profiling step it measures run on the CPU backend (the same batch validation and model
// code as on a GPU): no GPU needed.
#include "worker/gpu_memory_plan.h"

#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "server/cli/gpu_memory_setup.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"

namespace kvfold {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kMiB = int64_t{1} << 20;

// An 80 GiB device after loading 2 GiB of weights and a 1 GiB activation peak, with a 512 MiB
// CUDA context: 76.5 GiB free.
GpuMemoryPlanInput H100Like() {
  GpuMemoryPlanInput in;
  in.total_bytes = 80 * kGiB;
  in.weight_bytes = 2 * kGiB;
  in.activation_bytes = 1 * kGiB;
  in.free_bytes = in.total_bytes - in.weight_bytes - in.activation_bytes - 512 * kMiB;
  in.utilization = 0.9;
  in.bytes_per_block = 2 * kMiB;
  in.min_blocks = 128;
  return in;
}

TEST(GpuMemoryPlanTest, PoolTakesWhatUtilizationLeaves) {
  absl::StatusOr<GpuMemoryPlan> plan = PlanGpuMemory(H100Like());
  ASSERT_TRUE(plan.ok()) << plan.status();
  // 0.9 * 80 GiB = 72 GiB; 3.5 GiB in use leaves 68.5 GiB = 35072 blocks of 2 MiB.
  EXPECT_EQ(plan->num_blocks, 35072);
  EXPECT_EQ(plan->kv_pool_bytes, int64_t{35072} * 2 * kMiB);
  EXPECT_EQ(plan->other_bytes, 512 * kMiB);
}

TEST(GpuMemoryPlanTest, PoolIsWholeBlocks) {
  GpuMemoryPlanInput in = H100Like();
  in.bytes_per_block = 3 * kMiB;  // 68.5 GiB / 3 MiB = 23381.33
  absl::StatusOr<GpuMemoryPlan> plan = PlanGpuMemory(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->num_blocks, 23381);
  EXPECT_EQ(plan->kv_pool_bytes, int64_t{23381} * 3 * kMiB);
}

TEST(GpuMemoryPlanTest, AnotherProcessOnTheDeviceCountsAgainstTheBudget) {
  GpuMemoryPlanInput in = H100Like();
  in.free_bytes -= 10 * kGiB;
  absl::StatusOr<GpuMemoryPlan> plan = PlanGpuMemory(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->num_blocks, (68 * 1024 + 512 - 10 * 1024) / 2);  // 58.5 GiB in 2 MiB blocks
  EXPECT_EQ(plan->other_bytes, 10 * kGiB + 512 * kMiB);
}

TEST(GpuMemoryPlanTest, NeverMoreThanIsFree) {
  GpuMemoryPlanInput in = H100Like();
  in.utilization = 1.0;  // 80 GiB - 3.5 GiB in use = the 76.5 GiB free
  absl::StatusOr<GpuMemoryPlan> plan = PlanGpuMemory(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_LE(plan->kv_pool_bytes, in.free_bytes);
  EXPECT_EQ(plan->num_blocks, (76 * 1024 + 512) / 2);
  in.headroom_bytes = 64 * kMiB;  // kept free even at utilization 1
  plan = PlanGpuMemory(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->num_blocks, (76 * 1024 + 512 - 64) / 2);
}

TEST(GpuMemoryPlanTest, ExplicitKvCacheMemoryOverridesUtilization) {
  GpuMemoryPlanInput in = H100Like();
  in.kv_cache_bytes = 1 * kGiB + 1;
  absl::StatusOr<GpuMemoryPlan> plan = PlanGpuMemory(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->num_blocks, 512);
  EXPECT_EQ(plan->kv_pool_bytes, 1 * kGiB);
}

TEST(GpuMemoryPlanTest, ExplicitKvCacheMemoryBeyondFreeIsAnError) {
  GpuMemoryPlanInput in = H100Like();
  in.kv_cache_bytes = 77 * kGiB;
  absl::StatusOr<GpuMemoryPlan> plan = PlanGpuMemory(in);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(), HasSubstr("--kv-cache-memory"));
}

TEST(GpuMemoryPlanTest, NothingFitsNamesTheNumbersAndTheRemedy) {
  GpuMemoryPlanInput in = H100Like();
  in.utilization = 0.04;  // 3.2 GiB: less than the 3.5 GiB already in use
  absl::StatusOr<GpuMemoryPlan> plan = PlanGpuMemory(in);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(), HasSubstr("raise --gpu-memory-utilization"));
  EXPECT_THAT(plan.status().message(), HasSubstr("2.00 GiB"));  // the weights
}

TEST(GpuMemoryPlanTest, TooFewBlocksForOneLongSequenceIsAnError) {
  GpuMemoryPlanInput in = H100Like();
  in.utilization = 0.05;  // 4 GiB - 3.5 GiB = 256 blocks
  in.min_blocks = 257;
  EXPECT_FALSE(PlanGpuMemory(in).ok());
  in.min_blocks = 256;
  absl::StatusOr<GpuMemoryPlan> plan = PlanGpuMemory(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->num_blocks, 256);
}

TEST(GpuMemoryPlanTest, RejectsBadInputs) {
  GpuMemoryPlanInput in = H100Like();
  in.utilization = 0.0;
  EXPECT_EQ(PlanGpuMemory(in).status().code(), absl::StatusCode::kInvalidArgument);
  in.utilization = 1.5;
  EXPECT_EQ(PlanGpuMemory(in).status().code(), absl::StatusCode::kInvalidArgument);
  in = H100Like();
  in.bytes_per_block = 0;
  EXPECT_EQ(PlanGpuMemory(in).status().code(), absl::StatusCode::kInvalidArgument);
  in = H100Like();
  in.free_bytes = in.total_bytes + 1;
  EXPECT_EQ(PlanGpuMemory(in).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GpuMemoryPlanTest, FormatsBytes) {
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(3 * kMiB / 2), "1.50 MiB");
  EXPECT_EQ(FormatBytes(80 * kGiB), "80.00 GiB");
}

// The largest step the scheduler can make is a valid batch for the model: every batched token, as
// tails of sequences at max_model_len, every row asking for logits.
TEST(ProfilingForwardTest, RunsTheLargestStepOnStories260K) {
  absl::StatusOr<std::unique_ptr<Ops>> ops = CreateCpuOps(1);
  ASSERT_TRUE(ops.ok()) << ops.status();
  absl::StatusOr<std::unique_ptr<LlamaModel>> model =
      testing::LoadModel(testing::StoriesPath(), **ops);
  ASSERT_TRUE(model.ok()) << model.status();
  // (max_num_batched_tokens, max_num_seqs, max_model_len, block_size)
  for (const auto& [tokens, seqs, len, block] :
       {std::tuple{2048, 256, 512, 16}, std::tuple{250, 256, 100, 16}, std::tuple{64, 2, 24, 16},
        std::tuple{1, 1, 512, 16}, std::tuple{300, 8, 77, 32}}) {
    SCOPED_TRACE(::testing::Message()
                 << tokens << " tokens, " << seqs << " seqs, len " << len << ", block " << block);
    SchedulerConfig s;
    s.max_num_batched_tokens = tokens;
    s.max_num_seqs = seqs;
    s.max_model_len = len;
    CacheConfig c;
    c.block_size = block;
    c.kv_dtype = DType::kBF16;
    const absl::Status status = cli::RunProfilingForward(**model, **ops, s, c);
    EXPECT_TRUE(status.ok()) << status;
  }
}

}  // namespace
}  // namespace kvfold
