// Every CPU op against a naive double-precision reference on random inputs. Tolerances: the ops
// accumulate in F32, so for sums of n products of O(1) values the error is a few ulps times
// sqrt(n); 1e-4 relative (plus 1e-5 absolute) leaves margin without hiding an indexing bug, which
// produces O(1) errors.
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/thread_pool.h"

namespace kvfold {
namespace {

std::vector<float> RandomVector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TensorView View(std::vector<float>& v, int64_t rows, int64_t cols) {
  return {v.data(), DType::kF32, rows, cols};
}

void ExpectNear(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-5 + 1e-4 * std::abs(want[i])) << "element " << i;
  }
}

// F16 bits for a float, via round-trip through the test's own narrow conversion (exact for the
// values used: we quantise the reference weights to what F16 can hold).
uint16_t F32ToF16(float f) {
  // Good enough for normal values in range: round mantissa to 10 bits.
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000;
  int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
  uint32_t mantissa = bits & 0x7fffff;
  if (exponent <= 0) return static_cast<uint16_t>(sign);  // flush tiny values to zero
  mantissa += 0x1000;                                     // round half up
  if (mantissa & 0x800000) {
    mantissa = 0;
    ++exponent;
  }
  return static_cast<uint16_t>(sign | (exponent << 10) | (mantissa >> 13));
}

class CpuOpsTest : public ::testing::TestWithParam<int> {
 protected:
  std::unique_ptr<Ops> ops_ = NewCpuOps(GetParam());
};

struct MatMulShape {
  int64_t n, k, m;
};

TEST_P(CpuOpsTest, MatMulMatchesReferenceForEveryWeightDtype) {
  const MatMulShape shapes[] = {{1, 1, 1}, {3, 17, 5}, {7, 64, 33}, {2, 257, 130}, {19, 96, 300}};
  for (const auto& [n, k, m] : shapes) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (bool with_bias : {false, true}) {
        std::vector<float> x = RandomVector(n * k, 1), w = RandomVector(m * k, 2),
                           bias = RandomVector(m, 3);
        std::vector<uint16_t> narrow(m * k);
        for (int64_t i = 0; i < m * k; ++i) {
          if (dtype == DType::kBF16)
            narrow[i] = cpu::F32ToBf16(w[i]), w[i] = cpu::Bf16ToF32(narrow[i]);
          if (dtype == DType::kF16) narrow[i] = F32ToF16(w[i]), w[i] = cpu::F16ToF32(narrow[i]);
        }
        TensorView wv =
            dtype == DType::kF32 ? View(w, m, k) : TensorView{narrow.data(), dtype, m, k};
        std::vector<float> out(n * m);
        TensorView bv = View(bias, 1, m);
        ops_->MatMul(View(x, n, k), wv, with_bias ? &bv : nullptr, View(out, n, m));
        std::vector<double> want(n * m);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < m; ++r) {
            double s = with_bias ? bias[r] : 0.0;
            for (int64_t i = 0; i < k; ++i) s += double(x[t * k + i]) * w[r * k + i];
            want[t * m + r] = s;
          }
        }
        SCOPED_TRACE(::testing::Message() << "n=" << n << " k=" << k << " m=" << m << " dtype="
                                          << DTypeName(dtype) << " bias=" << with_bias);
        ExpectNear(out, want);
      }
    }
  }
}

// A token's output row is bit-identical whether it is computed alone or inside a larger batch, and
// whatever the thread count: the property continuous batching relies on.
TEST_P(CpuOpsTest, MatMulRowsAreBitIdenticalAcrossBatchSizes) {
  const int64_t n = 33, k = 200, m = 300;
  std::vector<float> x = RandomVector(n * k, 4), w = RandomVector(m * k, 5), all(n * m);
  ops_->MatMul(View(x, n, k), View(w, m, k), nullptr, View(all, n, m));
  std::unique_ptr<Ops> single = NewCpuOps(1);
  for (int64_t t : {0L, 16L, 32L}) {
    std::vector<float> row(x.begin() + t * k, x.begin() + (t + 1) * k), out(m);
    single->MatMul(View(row, 1, k), View(w, m, k), nullptr, View(out, 1, m));
    for (int64_t r = 0; r < m; ++r) ASSERT_EQ(out[r], all[t * m + r]) << "token " << t;
  }
}

TEST_P(CpuOpsTest, RmsNormMatchesReference) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {5, 64}, {2, 4099}}) {
    std::vector<float> x = RandomVector(rows * cols, 6), w = RandomVector(cols, 7),
                       out(rows * cols);
    ops_->RmsNorm(View(x, rows, cols), View(w, 1, cols), 1e-5f, View(out, rows, cols));
    std::vector<double> want(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t c = 0; c < cols; ++c) ss += double(x[r * cols + c]) * x[r * cols + c];
      const double inv = 1.0 / std::sqrt(ss / cols + 1e-5);
      for (int64_t c = 0; c < cols; ++c) want[r * cols + c] = x[r * cols + c] * inv * w[c];
    }
    ExpectNear(out, want);
    ops_->RmsNorm(View(x, rows, cols), View(w, 1, cols), 1e-5f, View(x, rows, cols));  // aliased
    EXPECT_EQ(x, out);
  }
}

TEST_P(CpuOpsTest, RopeRotatesPairsHalfApart) {
  const int heads = 3, d = 8, positions = 20;
  std::vector<float> table(positions * d);
  for (int p = 0; p < positions; ++p) {
    for (int i = 0; i < d / 2; ++i) {
      const double angle = p * std::pow(10000.0, -2.0 * i / d);
      table[p * d + i] = std::cos(angle);
      table[p * d + d / 2 + i] = std::sin(angle);
    }
  }
  std::vector<int32_t> pos = {0, 5, 19, 1};
  std::vector<float> x = RandomVector(pos.size() * heads * d, 8), orig = x;
  ops_->Rope(View(x, pos.size(), heads * d), heads, d, pos, RopeTable{View(table, positions, d)});
  std::vector<double> want(x.size());
  for (size_t t = 0; t < pos.size(); ++t) {
    for (int h = 0; h < heads; ++h) {
      const float* v = orig.data() + (t * heads + h) * d;
      double* o = want.data() + (t * heads + h) * d;
      for (int i = 0; i < d / 2; ++i) {
        const double angle = pos[t] * std::pow(10000.0, -2.0 * i / d);
        o[i] = v[i] * std::cos(angle) - v[i + d / 2] * std::sin(angle);
        o[i + d / 2] = v[i + d / 2] * std::cos(angle) + v[i] * std::sin(angle);
      }
    }
  }
  ExpectNear(x, want);
}

TEST_P(CpuOpsTest, ElementwiseOpsEmbeddingAndGather) {
  const int64_t rows = 3, cols = 11;
  std::vector<float> g = RandomVector(rows * cols, 9), u = RandomVector(rows * cols, 10),
                     out(rows * cols);
  ops_->SiluMul(View(g, rows, cols), View(u, rows, cols), View(out, rows, cols));
  std::vector<double> want(rows * cols);
  for (size_t i = 0; i < want.size(); ++i) want[i] = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
  ExpectNear(out, want);

  std::vector<float> sum = g;
  ops_->Add(View(sum, rows, cols), View(u, rows, cols));
  for (size_t i = 0; i < sum.size(); ++i) ASSERT_EQ(sum[i], g[i] + u[i]);

  std::vector<float> table = RandomVector(7 * cols, 11);
  std::vector<uint16_t> table_bf16(table.size());
  for (size_t i = 0; i < table.size(); ++i) table_bf16[i] = cpu::F32ToBf16(table[i]);
  const std::vector<int32_t> ids = {6, 0, 6};
  std::vector<float> emb(ids.size() * cols), emb_bf16(ids.size() * cols);
  ops_->Embedding(ids, View(table, 7, cols), View(emb, ids.size(), cols));
  ops_->Embedding(ids, {table_bf16.data(), DType::kBF16, 7, cols},
                  View(emb_bf16, ids.size(), cols));
  for (size_t i = 0; i < ids.size(); ++i) {
    for (int64_t c = 0; c < cols; ++c) {
      ASSERT_EQ(emb[i * cols + c], table[ids[i] * cols + c]);
      ASSERT_EQ(emb_bf16[i * cols + c], cpu::Bf16ToF32(table_bf16[ids[i] * cols + c]));
    }
  }

  std::vector<float> gathered(2 * cols);
  const std::vector<int32_t> pick = {2, 0};
  ops_->GatherRows(View(g, rows, cols), pick, View(gathered, 2, cols));
  for (int64_t c = 0; c < cols; ++c) {
    ASSERT_EQ(gathered[c], g[2 * cols + c]);
    ASSERT_EQ(gathered[cols + c], g[c]);
  }
}

TEST(NumericsTest, HalfConversionsCoverSpecialValues) {
  EXPECT_EQ(cpu::F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(cpu::F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(cpu::F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(cpu::F16ToF32(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(cpu::F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(cpu::F16ToF32(0x7e00)));
  EXPECT_EQ(cpu::Bf16ToF32(cpu::F32ToBf16(1.5f)), 1.5f);
  EXPECT_EQ(cpu::F32ToBf16(1.00390625f), 0x3f80);  // ties round to even
}

TEST(ThreadPoolTest, ParallelForCoversEveryIndexOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 3, 7, 1000}) {
    std::vector<std::atomic<int>> hits(n);
    pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) hits[i]++;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, CpuOpsTest, ::testing::Values(1, 2),
                         [](const auto& info) { return "threads" + std::to_string(info.param); });

}  // namespace
}  // namespace kvfold
