// Every non-attention op of the CUDA backend against the CPU reference, on random inputs with a
// fixed seed. Shapes include 1 and odd sizes. Each tolerance says why it is what it is.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/gpu/backend_pair.h"

namespace kvfold {
namespace {

using testing::BackendPairTest;
using testing::HostArray;
using testing::RandomArray;
using testing::TensorPair;

constexpr float kF32Epsilon = 5.96e-8f;  // unit roundoff 2^-24

using CudaOpsTest = BackendPairTest;

TEST(CudaFactoryTest, ReportsMissingDeviceOrBadOrdinal) {
  if (!CudaDeviceAvailable()) {
    EXPECT_FALSE(NewCudaOps(0).ok());
    return;
  }
  EXPECT_TRUE(NewCudaOps(0).ok());
  EXPECT_FALSE(NewCudaOps(-1).ok());
  EXPECT_FALSE(NewCudaOps(1 << 20).ok());
}

TEST_F(CudaOpsTest, AllocateIsZeroedAndCopiesRoundTrip) {
  const Tensor t = gpu_->Allocate(DType::kF32, 3, 5);
  EXPECT_EQ(Download(*gpu_, t), std::vector<float>(15, 0.0f));
  std::mt19937 rng(1);
  const HostArray a = RandomArray(rng, DType::kF32, 3, 5);
  gpu_->CopyFromHost(a.bytes.data(), t.view());
  testing::ExpectBitwiseEqual(Download(*gpu_, t), a.values);
}

// Exact: a row copy plus an exact widening conversion.
TEST_F(CudaOpsTest, EmbeddingMatchesCpuForEveryDtype) {
  std::mt19937 rng(2);
  for (const DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (const int64_t cols : {1, 19, 4096}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(dtype) << " cols " << cols);
      const TensorPair table = Upload(RandomArray(rng, dtype, 37, cols));
      const std::vector<int32_t> ids = {0, 36, 5, 5, 17, 0, 2, 29, 11, 36, 1, 8, 3};
      for (const size_t n : {size_t{1}, ids.size()}) {
        const absl::Span<const int32_t> span(ids.data(), n);
        const TensorPair out = Zeros(static_cast<int64_t>(n), cols);
        cpu_->Embedding(span, table.cpu.view(), out.cpu.view());
        gpu_->Embedding(span, table.gpu.view(), out.gpu.view());
        testing::ExpectBitwiseEqual(Gpu(out), Cpu(out));
      }
    }
  }
}

// The sum of squares is reduced in a different order (a tree here, the CPU's own order there):
// rounding errors of n positive terms random-walk to about sqrt(n) * u ~ 5e-6 relative for
// n = 8192; 2e-5 relative leaves a 4x margin, while a wrong row, eps or weight is off by far more.
TEST_F(CudaOpsTest, RmsNormMatchesCpuAndMayAlias) {
  std::mt19937 rng(3);
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {5, 4097}, {3, 8192}}) {
    SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
    const HostArray x = RandomArray(rng, DType::kF32, rows, cols, -3.0f, 3.0f);
    const TensorPair weight = Upload(RandomArray(rng, DType::kF32, 1, cols, 0.5f, 1.5f));
    const TensorPair in = Upload(x);
    const TensorPair out = Zeros(rows, cols);
    cpu_->RmsNorm(in.cpu.view(), weight.cpu.view(), 1e-5f, out.cpu.view());
    gpu_->RmsNorm(in.gpu.view(), weight.gpu.view(), 1e-5f, out.gpu.view());
    const std::vector<float> expected = Cpu(out);
    testing::ExpectNear(Gpu(out), expected, 1e-7, 2e-5);
    // In place gives the same bits as out of place.
    gpu_->RmsNorm(in.gpu.view(), weight.gpu.view(), 1e-5f, in.gpu.view());
    testing::ExpectBitwiseEqual(Gpu(in), Gpu(out));
  }
}

// Bound per output element: both sides accumulate k products in F32 (error <= k * u * S each,
// S = sum_l |x_l w_l|), and the GPU rounds activations to the weight dtype first (error <= u_w * S,
// u_w = 2^-11 for F16, 2^-8 for BF16, 0 for F32). Rigorous, so never flaky; a wrong transpose,
// row or bias breaks it by orders of magnitude.
TEST_F(CudaOpsTest, MatMulMatchesCpuWithinRoundingBound) {
  std::mt19937 rng(4);
  struct Shape {
    int64_t n, k, m;
  };
  for (const DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const double u_w = dtype == DType::kF32 ? 0.0 : dtype == DType::kF16 ? 0x1p-11 : 0x1p-8;
    // n = 130 and 1100 cross the 128-row chunk and the 1024-row staging group.
    for (const Shape s : {Shape{1, 1, 1}, Shape{3, 33, 17}, Shape{130, 257, 65},
                          Shape{1100, 64, 96}, Shape{7, 4096, 11}}) {
      for (const bool with_bias : {false, true}) {
        SCOPED_TRACE(::testing::Message() << DTypeName(dtype) << " n " << s.n << " k " << s.k
                                          << " m " << s.m << " bias " << with_bias);
        const HostArray x = RandomArray(rng, DType::kF32, s.n, s.k);
        const HostArray w = RandomArray(rng, dtype, s.m, s.k);
        const HostArray b = RandomArray(rng, DType::kF32, 1, s.m);
        const TensorPair xt = Upload(x);
        const TensorPair wt = Upload(w);
        const TensorPair bt = Upload(b);
        const TensorPair out = Zeros(s.n, s.m);
        const TensorView cpu_bias = bt.cpu.view();
        const TensorView gpu_bias = bt.gpu.view();
        cpu_->MatMul(xt.cpu.view(), wt.cpu.view(), with_bias ? &cpu_bias : nullptr, out.cpu.view());
        gpu_->MatMul(xt.gpu.view(), wt.gpu.view(), with_bias ? &gpu_bias : nullptr, out.gpu.view());
        std::vector<double> tolerance(s.n * s.m);
        for (int64_t i = 0; i < s.n; ++i) {
          for (int64_t j = 0; j < s.m; ++j) {
            double sum_abs = 0.0;
            for (int64_t l = 0; l < s.k; ++l) {
              sum_abs += std::abs(double{x.values[i * s.k + l]} * w.values[j * s.k + l]);
            }
            const double bias_abs = with_bias ? std::abs(b.values[j]) : 0.0;
            tolerance[i * s.m + j] =
                (u_w + 2.0 * (s.k + 1) * kF32Epsilon) * (sum_abs + bias_abs) + 1e-30;
          }
        }
        testing::ExpectWithin(Gpu(out), Cpu(out), tolerance);
      }
    }
  }
}

// The ops.h contract: a row's result does not depend on what else shares the batch.
TEST_F(CudaOpsTest, MatMulRowsAreBatchInvariant) {
  std::mt19937 rng(5);
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    const int64_t n = 300, k = 320, m = 96;
    const HostArray x = RandomArray(rng, DType::kF32, n, k);
    const Tensor w = Upload(RandomArray(rng, dtype, m, k)).gpu;
    const Tensor xs = Upload(x).gpu;
    const Tensor all = gpu_->Allocate(DType::kF32, n, m);
    gpu_->MatMul(xs.view(), w.view(), nullptr, all.view());
    const std::vector<float> batched = Download(*gpu_, all);
    for (const int64_t row : {int64_t{0}, int64_t{200}, n - 1}) {
      const Tensor one = gpu_->Allocate(DType::kF32, 1, m);
      gpu_->MatMul(xs.view().Rows(row, 1), w.view(), nullptr, one.view());
      const std::vector<float> alone = Download(*gpu_, one);
      testing::ExpectBitwiseEqual(
          alone, std::vector<float>(batched.begin() + row * m, batched.begin() + (row + 1) * m));
    }
  }
}

// Each output is a*cos - b*sin (or b*cos + a*sin) with every product and sum rounded on its own
// (no FMA) on both backends, so the bits agree.
TEST_F(CudaOpsTest, RopeMatchesCpu) {
  std::mt19937 rng(6);
  const int max_positions = 50;
  for (const auto& [num_heads, head_dim] : {std::pair<int, int>{1, 2}, {3, 8}, {5, 128}}) {
    SCOPED_TRACE(::testing::Message() << num_heads << " heads of " << head_dim);
    std::vector<float> table(max_positions * head_dim);
    for (int p = 0; p < max_positions; ++p) {
      for (int i = 0; i < head_dim / 2; ++i) {
        const double angle = p * std::pow(10000.0, -2.0 * i / head_dim);
        table[p * head_dim + i] = static_cast<float>(std::cos(angle));
        table[p * head_dim + head_dim / 2 + i] = static_cast<float>(std::sin(angle));
      }
    }
    const TensorPair cos_sin =
        Upload(testing::MakeArray(DType::kF32, max_positions, head_dim, table));
    const std::vector<int32_t> positions = {0, 49, 7, 7, 1, 23, 48};
    const TensorPair x =
        Upload(RandomArray(rng, DType::kF32, static_cast<int64_t>(positions.size()),
                           static_cast<int64_t>(num_heads) * head_dim));
    cpu_->Rope(x.cpu.view(), num_heads, head_dim, positions, RopeTable{cos_sin.cpu.view()});
    gpu_->Rope(x.gpu.view(), num_heads, head_dim, positions, RopeTable{cos_sin.gpu.view()});
    testing::ExpectBitwiseEqual(Gpu(x), Cpu(x));
  }
}

// silu(g) * u with expf on both sides: CUDA's expf is within 2 ulp, glibc's within 1; through the
// division and product that is a few ulp, so 4e-6 relative (~30 ulp) is safe.
TEST_F(CudaOpsTest, SiluMulMatchesCpuAndMayAlias) {
  std::mt19937 rng(7);
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {9, 1001}}) {
    const TensorPair gate = Upload(RandomArray(rng, DType::kF32, rows, cols, -12.0f, 12.0f));
    const TensorPair up = Upload(RandomArray(rng, DType::kF32, rows, cols, -2.0f, 2.0f));
    const TensorPair out = Zeros(rows, cols);
    cpu_->SiluMul(gate.cpu.view(), up.cpu.view(), out.cpu.view());
    gpu_->SiluMul(gate.gpu.view(), up.gpu.view(), out.gpu.view());
    testing::ExpectNear(Gpu(out), Cpu(out), 1e-30, 4e-6);
    gpu_->SiluMul(gate.gpu.view(), up.gpu.view(), gate.gpu.view());
    testing::ExpectBitwiseEqual(Gpu(gate), Gpu(out));
  }
}

// One IEEE addition per element on both sides: exact match.
TEST_F(CudaOpsTest, AddMatchesCpuExactly) {
  std::mt19937 rng(8);
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {17, 333}}) {
    const TensorPair x = Upload(RandomArray(rng, DType::kF32, rows, cols));
    const TensorPair y = Upload(RandomArray(rng, DType::kF32, rows, cols));
    cpu_->Add(x.cpu.view(), y.cpu.view());
    gpu_->Add(x.gpu.view(), y.gpu.view());
    testing::ExpectBitwiseEqual(Gpu(x), Cpu(x));
  }
}

// A row copy: exact match.
TEST_F(CudaOpsTest, GatherRowsMatchesCpuExactly) {
  std::mt19937 rng(9);
  for (const int64_t cols : {1, 7, 4096}) {
    const TensorPair x = Upload(RandomArray(rng, DType::kF32, 11, cols));
    const std::vector<int32_t> rows = {10, 0, 3, 3, 7};
    const TensorPair out = Zeros(static_cast<int64_t>(rows.size()), cols);
    cpu_->GatherRows(x.cpu.view(), rows, out.cpu.view());
    gpu_->GatherRows(x.gpu.view(), rows, out.gpu.view());
    testing::ExpectBitwiseEqual(Gpu(out), Cpu(out));
  }
}

}  // namespace
}  // namespace kvfold
