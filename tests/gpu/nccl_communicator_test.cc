// worker/nccl_communicator: real NCCL collectives, one rank per GPU, ranks as threads. One rank
// always (when a GPU exists); two when two GPUs exist. References are the naive definitions: the
// rank-order sum ((x0 + x1) + ...), rank-ordered concatenation, root's values. Host and device
// buffers both, with and without a producer stream. Without a GPU (or without NCCL at build time)
// every test skips; the two-rank cases skip with fewer than two GPUs.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_ops.h"
#include "tests/testing/collective_inputs.h"

#ifdef KVFOLD_HAVE_NCCL
#include <cuda_runtime_api.h>

#include "worker/nccl_communicator.h"
#endif

namespace kvfold {
namespace {

using testing::RankInput;
using testing::RankOrderSum;

#ifndef KVFOLD_HAVE_NCCL
TEST(NcclCommunicatorTest, SkippedWithoutNccl) { GTEST_SKIP() << "built without NCCL"; }
#else

constexpr size_t kCount = 1000;

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

void ExpectBits(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(std::memcmp(&got[i], &want[i], 4), 0)
        << "element " << i << ": " << got[i] << " vs " << want[i];
  }
}

// Runs `body(rank, communicator)` on `size` ranks (threads, rank r on GPU r) sharing one id.
void RunRanks(int size, const std::function<void(int, NcclCommunicator&)>& body,
              bool rank_order_sum = true) {
  absl::StatusOr<NcclId> id = NewNcclId();
  ASSERT_TRUE(id.ok()) << id.status();
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      NcclOptions options;
      options.rank = r;
      options.size = size;
      options.device = r;
      options.rank_order_sum = rank_order_sum;
      auto comm = NcclCommunicator::Create(options, *id);
      ASSERT_TRUE(comm.ok()) << comm.status();
      body(r, **comm);
    });
  }
  for (std::thread& t : threads) t.join();
}

class NcclCommunicatorTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
    if (DeviceCount() < GetParam()) GTEST_SKIP() << GetParam() << " ranks need that many GPUs";
  }
};

TEST_P(NcclCommunicatorTest, AllReduceSumIsTheRankOrderSumOnHostMemory) {
  const int size = GetParam();
  const std::vector<float> want = RankOrderSum(size, kCount, 99);
  RunRanks(size, [&](int rank, NcclCommunicator& comm) {
    std::vector<float> data = RankInput(rank, kCount, 99);
    ASSERT_TRUE(comm.AllReduceSum(data.data(), data.size()).ok());
    ExpectBits(data, want);
  });
}

TEST_P(NcclCommunicatorTest, AllReduceSumOnDeviceMemory) {
  const int size = GetParam();
  const std::vector<float> want = RankOrderSum(size, kCount, 99);
  RunRanks(size, [&](int rank, NcclCommunicator& comm) {
    const std::vector<float> input = RankInput(rank, kCount, 99);
    float* d = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), kCount * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d, input.data(), kCount * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_TRUE(comm.AllReduceSum(d, kCount).ok());
    std::vector<float> got(kCount);
    ASSERT_EQ(cudaMemcpy(got.data(), d, kCount * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(d);
    ExpectBits(got, want);
  });
}

// NCCL's own order: not promised to be the rank-order sum, only close to it (each term is at most
// 1e8, so any order's rounding error is within a few ulps of 1e8 per add).
TEST_P(NcclCommunicatorTest, NcclOrderAllReduceIsCloseToTheSum) {
  const int size = GetParam();
  const std::vector<float> want = RankOrderSum(size, kCount, 99);
  RunRanks(
      size,
      [&](int rank, NcclCommunicator& comm) {
        std::vector<float> data = RankInput(rank, kCount, 99);
        ASSERT_TRUE(comm.AllReduceSum(data.data(), data.size()).ok());
        for (size_t i = 0; i < kCount; ++i) EXPECT_NEAR(data[i], want[i], 16.0 * size) << i;
      },
      /*rank_order_sum=*/false);
}

TEST_P(NcclCommunicatorTest, AllGatherConcatenatesInRankOrder) {
  const int size = GetParam();
  RunRanks(size, [&](int rank, NcclCommunicator& comm) {
    const std::vector<float> in = RankInput(rank, kCount, 99);
    std::vector<float> out(kCount * size, -1.0f);
    ASSERT_TRUE(comm.AllGather(in.data(), kCount, out.data()).ok());
    for (int r = 0; r < size; ++r) {
      const std::vector<float> part(out.begin() + r * kCount, out.begin() + (r + 1) * kCount);
      ExpectBits(part, RankInput(r, kCount, 99));
    }
  });
}

TEST_P(NcclCommunicatorTest, BroadcastCopiesTheRootsValues) {
  const int size = GetParam();
  const int root = size - 1;
  RunRanks(size, [&](int rank, NcclCommunicator& comm) {
    std::vector<float> data = RankInput(rank, kCount, 99);
    ASSERT_TRUE(comm.Broadcast(data.data(), kCount, root).ok());
    ExpectBits(data, RankInput(root, kCount, 99));
    ASSERT_TRUE(comm.Barrier().ok());
    EXPECT_FALSE(comm.Broadcast(data.data(), kCount, size).ok());  // root outside the group
  });
}

// NcclOptions::stream: the input is written on a producer stream behind a queue of slow copies,
// and the collective is called without synchronising; it must read the written values (NCCL's
// stream waits on the producer), and work queued on the producer after the call must see the sum
// (the producer waits on the collective). Each rank drives its own producer stream.
TEST_P(NcclCommunicatorTest, AllReduceSumOrdersOnTheProducerStream) {
  const int size = GetParam();
  const std::vector<float> want = RankOrderSum(size, kCount, 7);
  absl::StatusOr<NcclId> id = NewNcclId();
  ASSERT_TRUE(id.ok()) << id.status();
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
      cudaStream_t producer = nullptr;
      ASSERT_EQ(cudaStreamCreateWithFlags(&producer, cudaStreamNonBlocking), cudaSuccess);
      NcclOptions options;
      options.rank = r;
      options.size = size;
      options.device = r;
      options.stream = producer;
      auto comm = NcclCommunicator::Create(options, *id);
      ASSERT_TRUE(comm.ok()) << comm.status();

      const std::vector<float> input = RankInput(r, kCount, 7);
      float* pinned = nullptr;
      ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&pinned), kCount * 4), cudaSuccess);
      std::memcpy(pinned, input.data(), kCount * 4);
      float* d = nullptr;
      float* after = nullptr;
      void* busy = nullptr;
      constexpr size_t kBusyBytes = size_t{256} << 20;
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), kCount * 4), cudaSuccess);
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&after), kCount * 4), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&busy, kBusyBytes), cudaSuccess);
      // NaNs until the producer's copy lands: a collective that ran early would spread them.
      ASSERT_EQ(cudaMemset(d, 0xFF, kCount * 4), cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      for (int i = 0; i < 8; ++i) {
        ASSERT_EQ(cudaMemsetAsync(busy, i, kBusyBytes, producer), cudaSuccess);
      }
      ASSERT_EQ(cudaMemcpyAsync(d, pinned, kCount * 4, cudaMemcpyHostToDevice, producer),
                cudaSuccess);
      ASSERT_TRUE((*comm)->AllReduceSum(d, kCount).ok());
      // Queued on the producer behind the collective: it copies the sum, not the input.
      ASSERT_EQ(cudaMemcpyAsync(after, d, kCount * 4, cudaMemcpyDeviceToDevice, producer),
                cudaSuccess);
      std::vector<float> got(kCount);
      ASSERT_EQ(cudaMemcpyAsync(got.data(), after, kCount * 4, cudaMemcpyDeviceToHost, producer),
                cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(producer), cudaSuccess);
      ExpectBits(got, want);
      comm->reset();
      cudaFree(busy);
      cudaFree(after);
      cudaFree(d);
      cudaFreeHost(pinned);
      cudaStreamDestroy(producer);
    });
  }
  for (std::thread& t : threads) t.join();
}

INSTANTIATE_TEST_SUITE_P(Ranks, NcclCommunicatorTest, ::testing::Values(1, 2),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "Ranks";
                         });

// The file store: rank 0 writes the id, the others read it. One rank here (one GPU suffices).
TEST(NcclFileStoreTest, OneRankJoinsThroughTheFileStore) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("kvfold_nccl_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  NcclOptions options;
  auto comm = NcclCommunicator::CreateWithFileStore(options, dir.string());
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_TRUE(std::filesystem::exists(dir / "kvfold.nccl_id"));
  std::vector<float> data = {1.5f, -2.0f};
  ASSERT_TRUE((*comm)->AllReduceSum(data.data(), 2).ok());
  EXPECT_EQ(data, (std::vector<float>{1.5f, -2.0f}));
  std::filesystem::remove_all(dir);
}

// A rank that waits for a group nobody else joins times out instead of hanging.
TEST(NcclFileStoreTest, AMissingRankZeroIsADeadline) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("kvfold_nccl_missing_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  NcclOptions options;
  options.rank = 1;
  options.size = 2;
  options.timeout = std::chrono::milliseconds(200);
  auto comm = NcclCommunicator::CreateWithFileStore(options, dir.string());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  std::filesystem::remove_all(dir);
}

#endif  // KVFOLD_HAVE_NCCL

}  // namespace
}  // namespace kvfold
