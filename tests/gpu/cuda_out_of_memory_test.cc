// Out of device memory on the CUDA backend is RESOURCE_EXHAUSTED naming the bytes wanted and free
// (Ops::TryAllocate, KvCache::Create), and the ops object stays usable afterwards.
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_ops.h"
#include "worker/kv_cache.h"

namespace kvfold {
namespace {

class CudaOutOfMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
    absl::StatusOr<std::unique_ptr<Ops>> ops = NewCudaOps(0);
    ASSERT_TRUE(ops.ok()) << ops.status();
    ops_ = *std::move(ops);
  }
  // Twice the device's total memory: never fits.
  int64_t TooManyBytes() const {
    absl::StatusOr<CudaMemoryInfo> info = QueryCudaMemory(0);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? 2 * info->total_bytes : int64_t{1} << 50;
  }
  // The ops still allocate, compute and copy back.
  void ExpectUsable() {
    Tensor x = ops_->Allocate(DType::kF32, 1, 4);
    const std::vector<float> ones = {1, 2, 3, 4};
    ops_->CopyFromHost(ones.data(), x.view());
    ops_->Add(x.view(), x.view());
    std::vector<float> back(4);
    ops_->CopyToHost(x.view(), back.data());
    EXPECT_EQ(back, (std::vector<float>{2, 4, 6, 8}));
  }

  std::unique_ptr<Ops> ops_;
};

TEST_F(CudaOutOfMemoryTest, TryAllocateTooMuchIsResourceExhausted) {
  const int64_t cols = 1 << 20;
  const int64_t rows = TooManyBytes() / (4 * cols) + 1;
  absl::StatusOr<Tensor> t = ops_->TryAllocate(DType::kF32, rows, cols);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kResourceExhausted) << t.status();
  const std::string message(t.status().message());
  EXPECT_NE(message.find("cannot allocate " + std::to_string(rows * cols * 4) + " bytes"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("bytes free"), std::string::npos) << message;
  ExpectUsable();
}

TEST_F(CudaOutOfMemoryTest, KvPoolThatDoesNotFitIsResourceExhausted) {
  // One layer of 8 K and 8 V heads of 128 in BF16: 4 KiB per token.
  const std::vector<KvLayerShape> shapes = {{8, 8, 128}};
  const int32_t block_size = 16;
  const int64_t blocks = TooManyBytes() / (4096 * block_size) + 1;
  ASSERT_LT(blocks, int64_t{1} << 31);
  absl::StatusOr<KvCache> cache =
      KvCache::Create(*ops_, shapes, static_cast<int32_t>(blocks), block_size, DType::kBF16);
  ASSERT_EQ(cache.status().code(), absl::StatusCode::kResourceExhausted) << cache.status();
  EXPECT_NE(cache.status().message().find("KV cache of " + std::to_string(blocks) + " blocks"),
            std::string::npos)
      << cache.status();
  ExpectUsable();
  // A pool that fits still works.
  absl::StatusOr<KvCache> small = KvCache::Create(*ops_, shapes, 4, block_size, DType::kBF16);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->layer(0).v.rows, 4 * block_size);
}

}  // namespace
}  // namespace kvfold
