// worker/gloo_communicator: real gloo collectives over TCP on 127.0.0.1, ranks as threads (an
// in-process HashStore) and as forked processes (a FileStore in a temp dir). References are the
// naive definitions: the rank-order sum ((x0 + x1) + x2) + ..., rank-ordered concatenation.
#include "worker/gloo_communicator.h"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gloo/rendezvous/hash_store.h"
#include "gtest/gtest.h"
#include "tests/testing/collective_inputs.h"

namespace kvfold {
namespace {

using testing::RankInput;
using testing::RankOrderSum;

using Clock = std::chrono::steady_clock;
constexpr size_t kCount = 1000;

std::vector<float> ReverseOrderSum(int size, size_t count) {
  std::vector<float> sum = RankInput(size - 1, count);
  for (int r = size - 2; r >= 0; --r) {
    const std::vector<float> x = RankInput(r, count);
    for (size_t i = 0; i < count; ++i) sum[i] += x[i];
  }
  return sum;
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

GlooOptions Options(int rank, int size, std::chrono::milliseconds timeout) {
  GlooOptions options;
  options.rank = rank;
  options.size = size;
  options.hostname = "127.0.0.1";
  options.timeout = timeout;
  return options;
}

// What one rank saw: two all-reduces of the same input, an all-gather, a broadcast.
struct RankResults {
  std::vector<float> reduced_first, reduced_second, gathered, broadcast;
};

// Runs the collectives on one rank; returns the first failure.
absl::Status RunCollectives(Communicator& comm, RankResults& out) {
  const int rank = comm.rank(), size = comm.size();
  out.reduced_first = RankInput(rank, kCount);
  absl::Status s = comm.AllReduceSum(out.reduced_first.data(), kCount);
  if (!s.ok()) return s;
  out.reduced_second = RankInput(rank, kCount);
  if (s = comm.AllReduceSum(out.reduced_second.data(), kCount); !s.ok()) return s;
  const std::vector<float> mine = {static_cast<float>(rank), 10.0f * rank + 1, -1.0f * rank};
  out.gathered.assign(mine.size() * size, NAN);
  if (s = comm.AllGather(mine.data(), mine.size(), out.gathered.data()); !s.ok()) return s;
  out.broadcast.assign(5, static_cast<float>(100 + rank));
  if (s = comm.Broadcast(out.broadcast.data(), out.broadcast.size(), size - 1); !s.ok()) return s;
  return comm.Barrier();
}

void ExpectCollectivesRight(int size, const std::vector<RankResults>& results) {
  const std::vector<float> expected = RankOrderSum(size, kCount);
  if (size > 2) {
    // The inputs make the order visible (with two ranks a + b == b + a, so only size > 2).
    ASSERT_FALSE(BitEqual(expected, ReverseOrderSum(size, kCount)));
  }
  for (int r = 0; r < size; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    const RankResults& got = results[r];
    EXPECT_TRUE(BitEqual(got.reduced_first, expected));
    EXPECT_TRUE(BitEqual(got.reduced_second, got.reduced_first));
    std::vector<float> gathered;
    for (int q = 0; q < size; ++q) {
      gathered.insert(gathered.end(), {static_cast<float>(q), 10.0f * q + 1, -1.0f * q});
    }
    EXPECT_EQ(got.gathered, gathered);
    EXPECT_EQ(got.broadcast, std::vector<float>(5, static_cast<float>(100 + size - 1)));
  }
}

// Runs `body(rank)` on `size` threads and waits for all.
void OnThreads(int size, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) threads.emplace_back(body, r);
  for (std::thread& t : threads) t.join();
}

class GlooThreadsTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooThreadsTest, CollectivesMatchTheirDefinitions) {
  const int size = GetParam();
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  std::vector<RankResults> results(size);
  std::vector<absl::Status> statuses(size);
  OnThreads(size, [&](int rank) {
    auto comm = GlooCommunicator::Create(Options(rank, size, std::chrono::seconds(10)), store);
    statuses[rank] = comm.ok() ? RunCollectives(**comm, results[rank]) : comm.status();
  });
  for (const absl::Status& s : statuses) ASSERT_TRUE(s.ok()) << s;
  ExpectCollectivesRight(size, results);
}

INSTANTIATE_TEST_SUITE_P(Ranks, GlooThreadsTest, ::testing::Values(2, 4));

std::string FreshDir() {
  std::string pattern = ::testing::TempDir() + "/gloo_test_XXXXXX";
  char* dir = mkdtemp(pattern.data());
  return dir == nullptr ? "" : std::string(dir);
}

void WriteFloats(const std::string& path, const std::vector<float>& v) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

std::vector<float> ReadFloats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

class GlooProcessesTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooProcessesTest, CollectivesMatchTheirDefinitions) {
  const int size = GetParam();
  const std::string dir = FreshDir();
  ASSERT_FALSE(dir.empty());
  const std::string store_dir = dir + "/store";
  std::filesystem::create_directory(store_dir);
  std::vector<pid_t> children;
  for (int rank = 0; rank < size; ++rank) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // The child: no gtest from here on; it reports by files and its exit code.
      auto comm = GlooCommunicator::CreateWithFileStore(
          Options(rank, size, std::chrono::seconds(10)), store_dir);
      RankResults got;
      if (!comm.ok() || !RunCollectives(**comm, got).ok()) _exit(1);
      const std::string prefix = dir + "/rank" + std::to_string(rank);
      WriteFloats(prefix + ".reduced_first", got.reduced_first);
      WriteFloats(prefix + ".reduced_second", got.reduced_second);
      WriteFloats(prefix + ".gathered", got.gathered);
      WriteFloats(prefix + ".broadcast", got.broadcast);
      comm->reset();
      _exit(0);
    }
    children.push_back(pid);
  }
  for (int rank = 0; rank < size; ++rank) {
    int wstatus = 0;
    ASSERT_EQ(waitpid(children[rank], &wstatus, 0), children[rank]);
    EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << "rank " << rank;
  }
  std::vector<RankResults> results(size);
  for (int rank = 0; rank < size; ++rank) {
    const std::string prefix = dir + "/rank" + std::to_string(rank);
    results[rank] = {ReadFloats(prefix + ".reduced_first"), ReadFloats(prefix + ".reduced_second"),
                     ReadFloats(prefix + ".gathered"), ReadFloats(prefix + ".broadcast")};
  }
  ExpectCollectivesRight(size, results);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Ranks, GlooProcessesTest, ::testing::Values(2, 4));

// The failure bound: 1 s here. gloo's own fallback waits are 30 s, so finishing well under that
// shows the configured bound was used (a loose bound: the machine may be loaded).
constexpr std::chrono::milliseconds kTimeout(1000);
constexpr std::chrono::seconds kWellUnderGlooDefault(15);

TEST(GlooFailureTest, ARankThatNeverJoinsTimesOutTheRendezvous) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  const Clock::time_point start = Clock::now();
  auto comm = GlooCommunicator::Create(Options(0, 2, kTimeout), store);  // rank 1 never comes
  EXPECT_LT(Clock::now() - start, kWellUnderGlooDefault);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
}

TEST(GlooFailureTest, ASilentRankTimesOutTheCollective) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  absl::Status first, second;
  Clock::duration elapsed{};
  std::unique_ptr<GlooCommunicator> silent;
  OnThreads(2, [&](int rank) {
    auto comm = GlooCommunicator::Create(Options(rank, 2, kTimeout), store);
    if (!comm.ok()) {
      first = comm.status();
      return;
    }
    if (rank == 1) {
      silent = std::move(*comm);  // joins, then never calls a collective
      return;
    }
    std::vector<float> data(kCount, 1.0f);
    const Clock::time_point start = Clock::now();
    first = (*comm)->AllReduceSum(data.data(), kCount);
    elapsed = Clock::now() - start;
    second = (*comm)->Barrier();
  });
  EXPECT_LT(elapsed, kWellUnderGlooDefault);
  EXPECT_EQ(first.code(), absl::StatusCode::kDeadlineExceeded) << first;
  EXPECT_EQ(second.code(), absl::StatusCode::kFailedPrecondition) << second;
}

TEST(GlooFailureTest, ARankThatLeavesFailsTheCollective) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  absl::Status status;
  OnThreads(2, [&](int rank) {
    auto comm = GlooCommunicator::Create(Options(rank, 2, kTimeout), store);
    if (!comm.ok()) {
      status = comm.status();
      return;
    }
    if (!(*comm)->Barrier().ok()) return;  // both joined; now rank 1 leaves
    if (rank == 1) return;                 // destroys its communicator: connections close
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::vector<float> data(kCount, 1.0f);
    status = (*comm)->AllReduceSum(data.data(), kCount);
  });
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(status.code() == absl::StatusCode::kUnavailable ||
              status.code() == absl::StatusCode::kDeadlineExceeded)
      << status;
}

TEST(GlooCommunicatorTest, RejectsBadArguments) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  EXPECT_EQ(GlooCommunicator::Create(Options(2, 2, kTimeout), store).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GlooCommunicator::Create(Options(0, 2, kTimeout), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto single = GlooCommunicator::Create(Options(0, 1, kTimeout), store);
  ASSERT_TRUE(single.ok()) << single.status();
  float x = 3.0f;
  EXPECT_EQ((*single)->Broadcast(&x, 1, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*single)->AllReduceSum(&x, 1).ok());
  EXPECT_EQ(x, 3.0f);
}

}  // namespace
}  // namespace kvfold
