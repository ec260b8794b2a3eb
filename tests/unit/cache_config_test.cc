// KV pool sizing: byte sizes as users write them, the dtype flag, and the block count with its
// error when the budget cannot hold one sequence.
#include "worker/cache_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"
#include "worker/checkpoint.h"
#include "worker/kv_cache.h"

namespace kvfold {
namespace {

using ::testing::HasSubstr;

TEST(ParseByteSizeTest, AcceptsSuffixesAndScientificNotation) {
  EXPECT_EQ(*ParseByteSize("512MiB"), int64_t{512} << 20);
  EXPECT_EQ(*ParseByteSize("2GiB"), int64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("2gib"), int64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("64KiB"), 65536);
  EXPECT_EQ(*ParseByteSize("1e9"), 1000000000);
  EXPECT_EQ(*ParseByteSize("1.5GB"), 1500000000);
  EXPECT_EQ(*ParseByteSize("3M"), 3000000);
  EXPECT_EQ(*ParseByteSize("1000"), 1000);
  EXPECT_EQ(*ParseByteSize("1000B"), 1000);
  EXPECT_EQ(*ParseByteSize(" 4 MiB "), int64_t{4} << 20);
  EXPECT_EQ(*ParseByteSize("0.5KiB"), 512);
  EXPECT_EQ(*ParseByteSize("1TiB"), int64_t{1} << 40);
}

TEST(ParseByteSizeTest, RejectsWhatIsNotAPositiveByteCount) {
  for (const char* bad : {"", "MiB", "-1", "0", "0.1", "12XB", "1e30", "nan", "inf", "1 2",
                          "512 MiBs", "1e", "--5"}) {
    absl::StatusOr<int64_t> r = ParseByteSize(bad);
    EXPECT_FALSE(r.ok()) << "'" << bad << "' gave " << *r;
    if (!r.ok()) {
      EXPECT_THAT(r.status().message(), HasSubstr("byte size"));
    }
  }
}

TEST(ParseKvCacheDtypeTest, AutoIsBf16) {
  EXPECT_EQ(*ParseKvCacheDtype("auto"), DType::kBF16);
  EXPECT_EQ(*ParseKvCacheDtype("bf16"), DType::kBF16);
  EXPECT_EQ(*ParseKvCacheDtype("F32"), DType::kF32);
  EXPECT_FALSE(ParseKvCacheDtype("f16").ok());
  EXPECT_FALSE(ParseKvCacheDtype("").ok());
}

absl::StatusOr<ModelConfig> Stories260K() {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
      Checkpoint::Open(testing::SourcePath("models/stories260K"));
  if (!ckpt.ok()) return ckpt.status();
  return (*ckpt)->config();
}

TEST(KvBytesPerTokenTest, SumsLayers) {
  const std::vector<KvLayerShape> layers = {{4, 4, 8}, {2, 4, 8}, {0, 0, 8}};
  EXPECT_EQ(KvBytesPerToken(layers, DType::kBF16), (8 + 6) * 8 * 2u);
  EXPECT_EQ(KvBytesPerToken(layers, DType::kF32), (8 + 6) * 8 * 4u);
  absl::StatusOr<ModelConfig> c = Stories260K();
  ASSERT_TRUE(c.ok()) << c.status();
  // 5 layers x (4 K + 4 V heads) x head_dim 8 x 2 bytes.
  EXPECT_EQ(KvCache::BytesPerToken(*c, DType::kBF16), 640u);
  EXPECT_EQ(KvCache::BytesPerToken(*c, DType::kF32), 1280u);
}

TEST(NumKvBlocksTest, BudgetOverBlockBytes) {
  CacheConfig config;
  config.memory_bytes = int64_t{1} << 20;
  config.block_size = 16;
  // 1 MiB / (16 tokens x 640 bytes) = 102.4 blocks.
  EXPECT_EQ(*NumKvBlocks(config, 640, 512), 102);
  config.block_size = 1;
  EXPECT_EQ(*NumKvBlocks(config, 640, 512), 1638);
}

TEST(NumKvBlocksTest, TooSmallForOneSequenceIsAClearError) {
  CacheConfig config;
  config.memory_bytes = 300000;  // 29 blocks of 16 x 640 bytes; 512 tokens need 32
  absl::StatusOr<int32_t> r = NumKvBlocks(config, 640, 512);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("holds 29 blocks"));
  EXPECT_THAT(r.status().message(), HasSubstr("needs 32 blocks"));
  EXPECT_TRUE(NumKvBlocks(config, 640, 464).ok());  // 29 x 16 tokens
}

TEST(NumKvBlocksTest, InvalidConfig) {
  CacheConfig config;
  config.block_size = 0;
  EXPECT_THAT(NumKvBlocks(config, 640, 16).status().message(), HasSubstr("--block-size"));
  config.block_size = 16;
  config.memory_bytes = int64_t{1} << 62;
  EXPECT_THAT(NumKvBlocks(config, 2, 16).status().message(), HasSubstr("block id"));
}

}  // namespace
}  // namespace kvfold
