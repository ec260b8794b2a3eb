// The CPU matmul on every SIMD path this machine supports and every weight dtype, quantized ones
// included, against a naive double-precision reference; and the bit-level contracts of ops.h: all
// ISA paths agree and a token's outputs do not depend on the batch or the thread count.
//
// Tolerance: the kernel accumulates k products in F32 (16 lanes of k/16 terms, then a tree), so
// its error is bounded by about (k/16 + 4) ulps of Σ|x_i w_i|; 2e-5 · Σ|x_i w_i| (+1e-6) covers
// k = 576 with room to spare, while an indexing or nibble-order bug gives O(1) errors. For float
// weights the reference uses their exact values. For quantized weights it evaluates ops.h's
// formula: activations quantized to Q8 blocks as quantize_activations.h defines them (written
// again here), then Σ_b d_w·d_x·Σ w_q·x_q (+ Σ_b m_w·d_x·Σ x_q for Q4_1) in double; only F32
// rounding differs, so the same tolerance over the magnitude of those terms applies.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/quant.h"

namespace kvfold {
namespace {

using cpu::Isa;

constexpr DType kAllDtypes[] = {DType::kF32,  DType::kBF16, DType::kF16,
                                DType::kQ8_0, DType::kQ4_0, DType::kQ4_1};

std::vector<float> RandomVector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Round-to-nearest F32 -> F16 for normal values (scales and weights of O(1) magnitude).
uint16_t F32ToF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000;
  int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
  uint32_t mantissa = (bits & 0x7fffff) + 0x1000;
  if (exponent <= 0) return static_cast<uint16_t>(sign);
  if (mantissa & 0x800000) mantissa = 0, ++exponent;
  return static_cast<uint16_t>(sign | (exponent << 10) | (mantissa >> 13));
}

void PutU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// Quantizes one block of 32 values the way llama.cpp's reference quantizers do (near enough: the
// test needs valid blocks, not the best ones).
void QuantizeBlock(const float* v, DType t, uint8_t* out) {
  float amax = 0, vmax = 0, lo = v[0], hi = v[0];
  for (int i = 0; i < 32; ++i) {
    if (std::abs(v[i]) > amax) amax = std::abs(v[i]), vmax = v[i];
    lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
  }
  if (t == DType::kQ8_0) {
    const uint16_t d = F32ToF16(amax / 127);
    PutU16(out, d);
    const float inv = amax > 0 ? 127 / amax : 0;
    for (int i = 0; i < 32; ++i) out[2 + i] = static_cast<uint8_t>(std::lround(v[i] * inv));
  } else if (t == DType::kQ4_0) {
    const float d = vmax / -8;
    PutU16(out, F32ToF16(d));
    const float inv = d != 0 ? 1 / d : 0;
    uint8_t q[32];
    for (int i = 0; i < 32; ++i) q[i] = std::min(15L, std::max(0L, std::lround(v[i] * inv) + 8));
    for (int i = 0; i < 16; ++i) out[2 + i] = static_cast<uint8_t>(q[i] | (q[16 + i] << 4));
  } else {
    const float d = (hi - lo) / 15;
    PutU16(out, F32ToF16(d));
    PutU16(out + 2, F32ToF16(lo));
    const float inv = d != 0 ? 1 / d : 0;
    uint8_t q[32];
    for (int i = 0; i < 32; ++i) q[i] = std::min(15L, std::max(0L, std::lround((v[i] - lo) * inv)));
    for (int i = 0; i < 16; ++i) out[4 + i] = static_cast<uint8_t>(q[i] | (q[16 + i] << 4));
  }
}

// A weight matrix stored in `dtype`, and its exact element values in double.
struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<double> values;
  std::vector<int> ints;                 // quantized: w_q per element (Q4_0: nibble - 8)
  std::vector<double> block_d, block_m;  // quantized: d and m (Q4_1) per block
  TensorView view;
};

double F16Value(const uint8_t* p) { return cpu::F16ToF32(cpu::LoadU16(p)); }

Weights MakeWeights(DType dtype, int64_t m, int64_t k, uint32_t seed) {
  const std::vector<float> w = RandomVector(m * k, seed);
  Weights out;
  out.bytes.resize(static_cast<size_t>(m) * RowBytes(dtype, k));
  out.values.resize(m * k);
  for (int64_t i = 0; i < m * k; ++i) {
    if (dtype == DType::kF32) std::memcpy(&out.bytes[4 * i], &w[i], 4), out.values[i] = w[i];
    if (dtype == DType::kBF16) {
      PutU16(&out.bytes[2 * i], cpu::F32ToBf16(w[i]));
      out.values[i] = cpu::Bf16ToF32(cpu::F32ToBf16(w[i]));
    }
    if (dtype == DType::kF16) {
      PutU16(&out.bytes[2 * i], F32ToF16(w[i]));
      out.values[i] = cpu::F16ToF32(F32ToF16(w[i]));
    }
  }
  if (IsQuantized(dtype)) {
    const size_t bb = BlockBytes(dtype);
    for (int64_t b = 0; b < m * k / 32; ++b) {
      uint8_t* block = &out.bytes[b * bb];
      QuantizeBlock(&w[b * 32], dtype, block);
      const double d = F16Value(block);
      for (int i = 0; i < 32; ++i) {
        const int nib = dtype == DType::kQ8_0 ? 0
                        : i < 16              ? block[(dtype == DType::kQ4_0 ? 2 : 4) + i] & 15
                                 : block[(dtype == DType::kQ4_0 ? 2 : 4) + i - 16] >> 4;
        double v = dtype == DType::kQ8_0   ? static_cast<int8_t>(block[2 + i]) * d
                   : dtype == DType::kQ4_0 ? (nib - 8) * d
                                           : nib * d + F16Value(block + 2);
        out.values[b * 32 + i] = v;
        out.ints.push_back(dtype == DType::kQ8_0   ? static_cast<int8_t>(block[2 + i])
                           : dtype == DType::kQ4_0 ? nib - 8
                                                   : nib);
      }
      out.block_d.push_back(d);
      out.block_m.push_back(dtype == DType::kQ4_1 ? F16Value(block + 2) : 0.0);
    }
  }
  out.view = {out.bytes.data(), dtype, m, k};
  return out;
}

// quantize_activations.h's definition, written independently: per 32-block d = amax / 127 and
// q = round-half-even(x / d) (as x · (1 / d)), in F32.
struct QuantizedRow {
  std::vector<int> q;
  std::vector<double> d;
};
QuantizedRow QuantizeRef(const float* x, int64_t k) {
  QuantizedRow out;
  for (int64_t b = 0; b < k / 32; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[b * 32 + i]));
    const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; ++i) {
      const float v = x[b * 32 + i] * id;
      out.q.push_back(static_cast<int>(std::nearbyint(v)));
    }
    out.d.push_back(d);
  }
  return out;
}

// The quantized formula for one output in double, and the magnitude of its terms.
std::pair<double, double> QuantizedRef(const Weights& w, DType dtype, int64_t r, int64_t k,
                                       const float* x) {
  const QuantizedRow qx = QuantizeRef(x, k);
  double sum = 0, magnitude = 0;
  for (int64_t b = 0; b < k / 32; ++b) {
    const int64_t wb = r * (k / 32) + b;
    int64_t dot = 0, dot_abs = 0, xsum = 0;
    for (int i = 0; i < 32; ++i) {
      const int wq = w.ints[wb * 32 + i], xq = qx.q[b * 32 + i];
      dot += wq * xq, dot_abs += std::abs(wq * xq), xsum += xq;
    }
    sum += w.block_d[wb] * qx.d[b] * static_cast<double>(dot);
    magnitude += std::abs(w.block_d[wb] * qx.d[b]) * static_cast<double>(dot_abs);
    if (dtype == DType::kQ4_1) {
      sum += w.block_m[wb] * qx.d[b] * static_cast<double>(xsum);
      magnitude += std::abs(w.block_m[wb] * qx.d[b] * static_cast<double>(xsum));
    }
  }
  return {sum, magnitude};
}

std::vector<float> RunMatMul(Ops& ops, std::vector<float>& x, int64_t n, const TensorView& w,
                             std::vector<float>* bias) {
  std::vector<float> out(n * w.rows);
  TensorView bv{bias ? bias->data() : nullptr, DType::kF32, 1, w.rows};
  ops.MatMul({x.data(), DType::kF32, n, w.cols}, w, bias ? &bv : nullptr,
             {out.data(), DType::kF32, n, w.rows});
  return out;
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    if (cpu::IsaSupported(isa)) isas.push_back(isa);
  }
  return isas;
}

struct Param {
  Isa isa;
  int threads;
};

class CpuKernelsTest : public ::testing::TestWithParam<Param> {
 protected:
  std::unique_ptr<Ops> ops_ = NewCpuOps(GetParam().threads, GetParam().isa);
};

TEST_P(CpuKernelsTest, MatMulMatchesDoubleReferenceForEveryDtype) {
  struct Shape {
    int64_t n, k, m;
  };
  const Shape shapes[] = {{1, 32, 1}, {1, 576, 37}, {3, 64, 5}, {5, 96, 33}, {17, 160, 9}};
  for (DType dtype : kAllDtypes) {
    for (const auto& [n, k, m] : shapes) {
      Weights w = MakeWeights(dtype, m, k, 2);
      std::vector<float> x = RandomVector(n * k, 1), bias = RandomVector(m, 3);
      const std::vector<float> out = RunMatMul(*ops_, x, n, w.view, &bias);
      SCOPED_TRACE(::testing::Message()
                   << DTypeName(dtype) << " n=" << n << " k=" << k << " m=" << m);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < m; ++r) {
          double want = bias[r], magnitude = std::abs(bias[r]);
          if (IsQuantized(dtype)) {
            const auto [dot, dot_magnitude] = QuantizedRef(w, dtype, r, k, &x[t * k]);
            want += dot, magnitude += dot_magnitude;
          } else {
            for (int64_t i = 0; i < k; ++i) {
              want += x[t * k + i] * w.values[r * k + i];
              magnitude += std::abs(x[t * k + i] * w.values[r * k + i]);
            }
          }
          ASSERT_NEAR(out[t * m + r], want, 1e-6 + 2e-5 * magnitude) << "t=" << t << " r=" << r;
        }
      }
    }
  }
}

// ops.h: a quantized matmul is within the Q8 activation rounding of the F32 matmul over the
// dequantized weights. Each activation moves by at most half its block's step d = amax / 127, so
// |Σ w_i (x_i - x̂_i)| <= Σ_b amax_b / 254 · Σ_{i in b} |w_i|; F32 rounding on both sides adds
// the 2e-5 · Σ|x_i w_i| of the reference test.
TEST_P(CpuKernelsTest, QuantizedMatMulIsWithinActivationRoundingOfDequantizedF32) {
  const int64_t n = 7, k = 128, m = 11;
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    Weights w = MakeWeights(dtype, m, k, 4);
    std::vector<float> deq(m * k), x = RandomVector(n * k, 5);
    for (int64_t r = 0; r < m; ++r) {
      cpu::DequantizeRow(w.bytes.data() + r * w.view.row_bytes(), dtype, k, &deq[r * k]);
    }
    const std::vector<float> quantized = RunMatMul(*ops_, x, n, w.view, nullptr);
    const std::vector<float> dense =
        RunMatMul(*ops_, x, n, {deq.data(), DType::kF32, m, k}, nullptr);
    double worst_fraction = 0;  // of the bound, to show it is not vacuous
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < m; ++r) {
        double bound = 1e-6;
        for (int64_t b = 0; b < k / 32; ++b) {
          float amax = 0;
          double wabs = 0;
          for (int64_t i = b * 32; i < b * 32 + 32; ++i) {
            amax = std::max(amax, std::abs(x[t * k + i]));
            wabs += std::abs(deq[r * k + i]);
            bound += 4e-5 * std::abs(x[t * k + i] * deq[r * k + i]);
          }
          bound += amax / 254.0 * (1 + 1e-5) * wabs;
        }
        const double diff = std::abs(quantized[t * m + r] - dense[t * m + r]);
        ASSERT_LE(diff, bound) << DTypeName(dtype) << " t=" << t << " r=" << r;
        worst_fraction = std::max(worst_fraction, diff / bound);
      }
    }
    EXPECT_GT(worst_fraction, 0.0) << DTypeName(dtype) << ": activations were not quantized?";
  }
}

// Every ISA path gives the generic bits for quantized weights on odd shapes: k with an odd number
// of blocks (AVX-512 pairs them), row and token counts that leave partial tiles, and the
// Q8_0 extremes (-128 weights, activations at ±127).
TEST_P(CpuKernelsTest, QuantizedMatMulIsBitIdenticalToGenericOnOddShapes) {
  std::unique_ptr<Ops> generic = NewCpuOps(1, Isa::kGeneric);
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    for (int64_t k : {32L, 96L, 160L, 576L}) {
      for (int64_t n : {1L, 3L, 5L, 9L}) {
        for (int64_t m : {1L, 6L, 13L, 70L}) {
          Weights w = MakeWeights(dtype, m, k, static_cast<uint32_t>(k + n + m));
          if (dtype == DType::kQ8_0) w.bytes[2] = 0x80;  // q = -128
          std::vector<float> x = RandomVector(n * k, 12), bias = RandomVector(m, 13);
          x[0] = 0;  // a zero block edge; and an all-zero block (d = 0):
          std::fill(x.begin() + (n * k) - 32, x.end(), 0.0f);
          ASSERT_EQ(RunMatMul(*ops_, x, n, w.view, &bias), RunMatMul(*generic, x, n, w.view, &bias))
              << DTypeName(dtype) << " k=" << k << " n=" << n << " m=" << m;
        }
      }
    }
  }
}

// A NaN or infinite activation makes its outputs NaN or infinite, as the F32 matmul would.
TEST_P(CpuKernelsTest, QuantizedMatMulPropagatesNonFiniteActivations) {
  const int64_t k = 64, m = 3;
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    Weights w = MakeWeights(dtype, m, k, 14);
    std::vector<float> x = RandomVector(2 * k, 15);
    x[40] = std::nanf("");
    x[k + 3] = INFINITY;
    const std::vector<float> out = RunMatMul(*ops_, x, 2, w.view, nullptr);
    for (int64_t r = 0; r < m; ++r) {
      EXPECT_TRUE(std::isnan(out[r])) << DTypeName(dtype);
      EXPECT_FALSE(std::isfinite(out[m + r])) << DTypeName(dtype);
    }
  }
}

// Every ISA path gives the generic path's bits, including the scalar tails of odd k.
TEST_P(CpuKernelsTest, EveryIsaGivesTheGenericBits) {
  std::unique_ptr<Ops> generic = NewCpuOps(1, Isa::kGeneric);
  for (DType dtype : kAllDtypes) {
    for (int64_t k : {8L, 17L, 64L, 257L, 576L}) {
      if (!ValidCols(dtype, k)) continue;
      Weights w = MakeWeights(dtype, 13, k, 6);
      std::vector<float> x = RandomVector(9 * k, 7), bias = RandomVector(13, 8);
      EXPECT_EQ(RunMatMul(*ops_, x, 9, w.view, &bias), RunMatMul(*generic, x, 9, w.view, &bias))
          << DTypeName(dtype) << " k=" << k;
    }
  }
}

// A token's outputs are the same bits alone (one thread) as inside a batch of 21 (any threads):
// register tiles of several tokens must not change any single output's order.
TEST_P(CpuKernelsTest, MatMulIsBatchAndThreadInvariant) {
  const int64_t n = 21, k = 96, m = 67;
  std::unique_ptr<Ops> single = NewCpuOps(1, GetParam().isa);
  for (DType dtype : kAllDtypes) {
    Weights w = MakeWeights(dtype, m, k, 9);
    std::vector<float> x = RandomVector(n * k, 10);
    const std::vector<float> all = RunMatMul(*ops_, x, n, w.view, nullptr);
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> row(x.begin() + t * k, x.begin() + (t + 1) * k);
      const std::vector<float> one = RunMatMul(*single, row, 1, w.view, nullptr);
      for (int64_t r = 0; r < m; ++r) {
        ASSERT_EQ(one[r], all[t * m + r]) << DTypeName(dtype) << " token " << t << " row " << r;
      }
    }
  }
}

TEST_P(CpuKernelsTest, EmbeddingDequantizesQuantizedRows) {
  const int64_t rows = 5, cols = 64;
  const std::vector<int32_t> ids = {4, 0, 4, 2};
  for (DType dtype : kAllDtypes) {
    Weights table = MakeWeights(dtype, rows, cols, 11);
    std::vector<float> out(ids.size() * cols);
    ops_->Embedding(ids, table.view, {out.data(), DType::kF32, 4, cols});
    for (size_t i = 0; i < ids.size(); ++i) {
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_NEAR(out[i * cols + c], table.values[ids[i] * cols + c], 1e-6) << DTypeName(dtype);
      }
    }
  }
}

std::vector<Param> AllParams() {
  std::vector<Param> params;
  for (Isa isa : SupportedIsas()) {
    for (int threads : {1, 2, 3}) params.push_back({isa, threads});
  }
  return params;
}

INSTANTIATE_TEST_SUITE_P(Paths, CpuKernelsTest, ::testing::ValuesIn(AllParams()),
                         [](const auto& info) {
                           return std::string(cpu::IsaName(info.param.isa)) + "_threads" +
                                  std::to_string(info.param.threads);
                         });

TEST(QuantizedDTypeTest, RowBytesFollowTheBlockLayouts) {
  EXPECT_EQ(RowBytes(DType::kQ8_0, 64), 68u);
  EXPECT_EQ(RowBytes(DType::kQ4_0, 576), 18u * 18);
  EXPECT_EQ(RowBytes(DType::kQ4_1, 32), 20u);
  EXPECT_EQ(RowBytes(DType::kBF16, 3), 6u);
  EXPECT_FALSE(ValidCols(DType::kQ4_0, 48));
  EXPECT_TRUE(ValidCols(DType::kF32, 48));
  uint8_t storage[3 * 40];
  const TensorView v{storage, DType::kQ4_1, 3, 64};
  EXPECT_EQ(v.nbytes(), 120u);
  EXPECT_EQ(v.Rows(2, 1).data, storage + 80);
  EXPECT_EQ(DTypeName(DType::kQ4_1), "Q4_1");
}

TEST(IsaTest, ParsesNamesAndRejectsUnknownOnes) {
  EXPECT_EQ(*cpu::ParseIsa("generic"), Isa::kGeneric);
  EXPECT_EQ(*cpu::ParseIsa(""), cpu::BestIsa());
  EXPECT_EQ(cpu::ParseIsa("sse9").status().code(), absl::StatusCode::kInvalidArgument);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    EXPECT_EQ(cpu::ParseIsa(cpu::IsaName(isa)).ok(), cpu::IsaSupported(isa));
  }
}

}  // namespace
}  // namespace kvfold
