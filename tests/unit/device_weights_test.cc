// ConvertToBf16: the host-side conversion of quantized GGUF weights for device backends. Expected
// values come from the block formats as ops.h defines them, with scales chosen so every value is
// exact in BF16, and from hand-worked BF16 rounding ties.
#include "worker/device_weights.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

constexpr uint16_t kF16Half = 0x3800;      // 0.5
constexpr uint16_t kF16MinusTwo = 0xC000;  // -2.0

float FromBf16(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, 4);
  return f;
}

void PutU16(std::vector<uint8_t>& bytes, size_t at, uint16_t v) {
  bytes[at] = static_cast<uint8_t>(v & 0xff);
  bytes[at + 1] = static_cast<uint8_t>(v >> 8);
}

TEST(DeviceWeightsTest, QuantizedTypesBecomeBf16AndOthersStay) {
  EXPECT_EQ(DeviceWeightDType(DType::kQ8_0), DType::kBF16);
  EXPECT_EQ(DeviceWeightDType(DType::kQ4_0), DType::kBF16);
  EXPECT_EQ(DeviceWeightDType(DType::kQ4_1), DType::kBF16);
  EXPECT_EQ(DeviceWeightDType(DType::kF32), DType::kF32);
  EXPECT_EQ(DeviceWeightDType(DType::kF16), DType::kF16);
  EXPECT_EQ(DeviceWeightDType(DType::kBF16), DType::kBF16);
}

// Two rows of two blocks each: value = q * d with q = i - 128 + 37 * row + 64 * block (wrapped to
// int8), d = 0.5.
TEST(DeviceWeightsTest, Q8_0MatchesTheBlockFormula) {
  const int64_t rows = 2, cols = 64;
  std::vector<uint8_t> bytes(rows * 2 * 34);
  std::vector<float> want;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < 2; ++b) {
      const size_t at = (r * 2 + b) * 34;
      PutU16(bytes, at, kF16Half);
      for (int i = 0; i < 32; ++i) {
        const auto q = static_cast<int8_t>(static_cast<uint8_t>(i + 37 * r + 64 * b + 128));
        bytes[at + 2 + i] = static_cast<uint8_t>(q);
        want.push_back(q * 0.5f);
      }
    }
  }
  const std::vector<uint16_t> got = ConvertToBf16({bytes.data(), DType::kQ8_0, rows, cols});
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(FromBf16(got[i]), want[i]) << "element " << i;
}

// One block: element i < 16 is the low nibble of byte i, element i >= 16 the high nibble of byte
// i - 16. Q4_0 subtracts 8 before scaling; Q4_1 scales and adds m.
TEST(DeviceWeightsTest, Q4BlocksMatchTheBlockFormula) {
  uint8_t qs[16];
  for (int i = 0; i < 16; ++i) qs[i] = static_cast<uint8_t>((i & 15) | ((15 - i) << 4));
  auto nibble = [&](int i) { return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4; };

  std::vector<uint8_t> q4_0(18);
  PutU16(q4_0, 0, kF16Half);
  std::memcpy(q4_0.data() + 2, qs, 16);
  const std::vector<uint16_t> got0 = ConvertToBf16({q4_0.data(), DType::kQ4_0, 1, 32});
  ASSERT_EQ(got0.size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(FromBf16(got0[i]), (nibble(i) - 8) * 0.5f) << i;

  std::vector<uint8_t> q4_1(20);
  PutU16(q4_1, 0, kF16Half);
  PutU16(q4_1, 2, kF16MinusTwo);
  std::memcpy(q4_1.data() + 4, qs, 16);
  const std::vector<uint16_t> got1 = ConvertToBf16({q4_1.data(), DType::kQ4_1, 1, 32});
  ASSERT_EQ(got1.size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(FromBf16(got1[i]), nibble(i) * 0.5f - 2.0f) << i;
}

// F32 rows round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 (goes to 1.0, even
// mantissa); 1 + 3 * 2^-8 a tie between 1 + 2^-7 and 1 + 2^-6 (goes to 1 + 2^-6).
TEST(DeviceWeightsTest, F32RoundsToNearestEven) {
  const std::vector<float> row = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -0.0f, 3.0f};
  const std::vector<uint16_t> got =
      ConvertToBf16({const_cast<float*>(row.data()), DType::kF32, 1, 4});
  EXPECT_EQ(got, (std::vector<uint16_t>{0x3F80, 0x3F82, 0x8000, 0x4040}));
}

}  // namespace
}  // namespace kvfold
