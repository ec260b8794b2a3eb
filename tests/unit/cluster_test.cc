// Multi-node bootstrap (server/cluster/): the leader's Cluster service admits follower nodes that
// run the same model, plan and group shape, once each, and two gloo ranks meet through its
// rendezvous store (in process on the leader, over gRPC on the follower) and all-reduce; each
// follower rank reads the leader's steps from its Steps stream, and a stream that breaks fails
// the end that is left.
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/cluster/cluster_follower.h"
#include "server/cluster/cluster_leader.h"
#include "server/cluster/grpc_step_source.h"
#include "server/cluster/key_value_store.h"
#include "server/cluster/step_publisher.h"
#include "worker/gloo_communicator.h"

namespace kvfold::cluster {
namespace {

using ::testing::HasSubstr;

GroupShape Shape() {
  GroupShape s;
  s.nnodes = 2;
  s.tensor_parallel_size = 2;
  s.model_fingerprint = "abc123";
  s.attention_plan_id = "";
  s.timeout_seconds = 20;
  return s;
}

std::string Address(const ClusterLeader& leader) {
  return "127.0.0.1:" + std::to_string(leader.port());
}

TEST(KeyValueStoreTest, GetWaitsForKeysAndTimesOut) {
  KeyValueStore store;
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    store.Set("b", "2");
    store.Set("a", "1");
  });
  absl::StatusOr<std::vector<std::string>> got = store.Get({"a", "b"}, absl::Seconds(30));
  setter.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (std::vector<std::string>{"1", "2"}));
  absl::StatusOr<std::vector<std::string>> missing =
      store.Get({"a", "never"}, absl::Milliseconds(10));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(missing.status().message(), HasSubstr("never"));
}

TEST(ClusterTest, JoinChecksTheModelPlanShapeAndNodeRank) {
  absl::StatusOr<std::unique_ptr<ClusterLeader>> leader =
      ClusterLeader::Start("127.0.0.1:0", Shape());
  ASSERT_TRUE(leader.ok()) << leader.status();
  const std::string address = Address(**leader);

  struct Refusal {
    int node_rank;
    std::function<void(GroupShape&)> change;
    std::string message;
  };
  const Refusal refusals[] = {
      {1, [](GroupShape& s) { s.model_fingerprint = "def456"; }, "different model"},
      {1, [](GroupShape& s) { s.attention_plan_id = "plan-x"; }, "different attention plan"},
      {1, [](GroupShape& s) { s.nnodes = s.tensor_parallel_size = 3; }, "--nnodes 3"},
      {2, [](GroupShape&) {}, "outside [1, 2)"},
  };
  for (const Refusal& r : refusals) {
    GroupShape shape = Shape();
    r.change(shape);
    const absl::StatusOr<Membership> refused =
        JoinCluster(address, r.node_rank, shape, absl::Seconds(10));
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << r.message;
    EXPECT_THAT(refused.status().message(), HasSubstr(r.message));
  }

  absl::StatusOr<Membership> m = JoinCluster(address, 1, Shape(), absl::Seconds(10));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rank, 1);
  EXPECT_EQ(m->world_size, 2);
  EXPECT_EQ(m->store_prefix, (*leader)->store_prefix());
  EXPECT_EQ(m->timeout_seconds, 20);

  absl::StatusOr<Membership> again = JoinCluster(address, 1, Shape(), absl::Seconds(10));
  EXPECT_THAT(again.status().message(), HasSubstr("has joined already"));
}

TEST(ClusterTest, NoLeaderIsADeadlineNotAHang) {
  // A port nothing listens on: the leader's own, once it is gone.
  std::string address;
  {
    absl::StatusOr<std::unique_ptr<ClusterLeader>> leader =
        ClusterLeader::Start("127.0.0.1:0", Shape());
    ASSERT_TRUE(leader.ok()) << leader.status();
    address = Address(**leader);
  }
  absl::StatusOr<Membership> m = JoinCluster(address, 1, Shape(), absl::Milliseconds(300));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(m.status().message(), HasSubstr("no tensor-parallel leader"));
}

TEST(ClusterTest, TwoRanksMeetThroughTheLeadersStoreAndAllReduce) {
  absl::StatusOr<std::unique_ptr<ClusterLeader>> leader =
      ClusterLeader::Start("127.0.0.1:0", Shape());
  ASSERT_TRUE(leader.ok()) << leader.status();
  absl::StatusOr<Membership> m = JoinCluster(Address(**leader), 1, Shape(), absl::Seconds(10));
  ASSERT_TRUE(m.ok()) << m.status();

  std::vector<float> data[2] = {{1.0f, 2.0f, 3.0f}, {10.0f, 20.0f, 30.0f}};
  absl::Status results[2];
  auto run_rank = [&](int rank, std::shared_ptr<gloo::rendezvous::Store> store,
                      const std::string& prefix) {
    GlooOptions options;
    options.rank = rank;
    options.size = 2;
    options.timeout = std::chrono::seconds(20);
    options.store_prefix = prefix;
    absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
        GlooCommunicator::Create(options, std::move(store));
    if (!comm.ok()) {
      results[rank] = comm.status();
      return;
    }
    results[rank] = (*comm)->AllReduceSum(data[rank].data(), data[rank].size());
  };
  std::thread leader_rank(run_rank, 0, (*leader)->gloo_store(), (*leader)->store_prefix());
  std::thread follower_rank(run_rank, 1, m->store, m->store_prefix);
  leader_rank.join();
  follower_rank.join();
  ASSERT_TRUE(results[0].ok()) << results[0];
  ASSERT_TRUE(results[1].ok()) << results[1];
  EXPECT_EQ(data[0], (std::vector<float>{11.0f, 22.0f, 33.0f}));
  EXPECT_EQ(data[1], data[0]);
}

// A step whose every array differs with `seed` (an int64 slot above 2^32 included).
StepMessage SomeStep(int seed) {
  StepMessage m;
  m.token_ids = {seed, seed + 1, seed + 2};
  m.positions = {4, 5, 0};
  m.query_start = {0, 2, 3};
  m.context_len = {6, 1};
  m.block_tables = {seed % 5, 1, 2, -1};
  m.max_blocks_per_seq = 2;
  m.slot_mapping = {(int64_t{1} << 40) + seed, 9, 12};
  m.logits_rows = {1, 2};
  m.cache_blocks = 16 + seed;
  m.cache_block_size = 4;
  m.cache_dtype = 1;
  return m;
}

TEST(StepStreamTest, AFollowerReadsEveryStepInOrderThenTheFinishMarker) {
  absl::StatusOr<std::unique_ptr<ClusterLeader>> leader =
      ClusterLeader::Start("127.0.0.1:0", Shape());
  ASSERT_TRUE(leader.ok()) << leader.status();
  absl::StatusOr<Membership> m = JoinCluster(Address(**leader), 1, Shape(), absl::Seconds(10));
  ASSERT_TRUE(m.ok()) << m.status();
  StepPublisher& steps = (*leader)->steps();

  ASSERT_TRUE(steps.Publish(SomeStep(1)).ok());
  StepMessage got;
  ASSERT_TRUE(m->steps->Next(got).ok());
  EXPECT_EQ(got, SomeStep(1));
  EXPECT_TRUE(got.Validate().ok());

  // One stream per rank.
  GrpcStepSource second(Address(**leader), 1, std::chrono::seconds(20));
  StepMessage none;
  absl::Status refused = second.Next(none);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.message(), HasSubstr("has a step stream already"));

  ASSERT_TRUE(steps.Publish(SomeStep(2)).ok());
  absl::Status finished;
  std::thread finisher([&] { finished = steps.Finish(); });
  ASSERT_TRUE(m->steps->Next(got).ok());
  EXPECT_EQ(got, SomeStep(2));
  ASSERT_TRUE(m->steps->Next(got).ok());
  EXPECT_TRUE(got.finish);
  finisher.join();
  EXPECT_TRUE(finished.ok()) << finished;
}

TEST(StepStreamTest, AFollowerWhoseStreamBreaksFailsTheLeader) {
  absl::StatusOr<std::unique_ptr<ClusterLeader>> leader =
      ClusterLeader::Start("127.0.0.1:0", Shape());
  ASSERT_TRUE(leader.ok()) << leader.status();
  absl::StatusOr<Membership> m = JoinCluster(Address(**leader), 1, Shape(), absl::Seconds(10));
  ASSERT_TRUE(m.ok()) << m.status();
  StepPublisher& steps = (*leader)->steps();
  absl::Notification failed;
  absl::Status failure;
  steps.SetOnFailure([&](const absl::Status& s) {
    failure = s;
    failed.Notify();
  });
  ASSERT_TRUE(steps.Publish(SomeStep(1)).ok());
  StepMessage got;
  ASSERT_TRUE(m->steps->Next(got).ok());
  m->steps.reset();  // the follower goes away mid-run

  ASSERT_TRUE(failed.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_EQ(failure.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(failure.message(), HasSubstr("rank 1's step stream broke"));
  EXPECT_EQ(steps.Publish(SomeStep(2)).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(steps.Finish().code(), absl::StatusCode::kUnavailable);
}

TEST(StepStreamTest, ALeaderThatGoesAwayEndsTheFollowersStreamWithAnError) {
  absl::StatusOr<std::unique_ptr<ClusterLeader>> leader =
      ClusterLeader::Start("127.0.0.1:0", Shape());
  ASSERT_TRUE(leader.ok()) << leader.status();
  absl::StatusOr<Membership> m = JoinCluster(Address(**leader), 1, Shape(), absl::Seconds(10));
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE((*leader)->steps().Publish(SomeStep(1)).ok());
  StepMessage got;
  ASSERT_TRUE(m->steps->Next(got).ok());
  leader->reset();
  const absl::Status s = m->steps->Next(got);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("ended before its finish marker"));
}

TEST(StepStreamTest, TheLeaderRunsAheadOfASilentFollowerByBoundedSteps) {
  StepPublisher steps(2, absl::Milliseconds(200));
  for (size_t i = 0; i < StepPublisher::kMaxQueued; ++i) {
    ASSERT_TRUE(steps.Publish(SomeStep(static_cast<int>(i))).ok());
  }
  const absl::Status s = steps.Publish(SomeStep(9));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(s.message(), HasSubstr("read no step"));
}

}  // namespace
}  // namespace kvfold::cluster
