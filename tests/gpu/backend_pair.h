// Test helpers that run one op on the CUDA backend and on the CPU reference with the same inputs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"

namespace kvfold::testing {

// A host array in one dtype: the raw bytes both backends receive, and their exact F32 values.
struct HostArray {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

// Rounds `values` to `dtype` (round to nearest even, as the CUDA intrinsics do).
inline HostArray MakeArray(DType dtype, int64_t rows, int64_t cols,
                           const std::vector<float>& values) {
  HostArray a{dtype, rows, cols, std::vector<uint8_t>(rows * cols * DTypeSize(dtype)), values};
  for (int64_t i = 0; i < rows * cols; ++i) {
    uint8_t* dst = a.bytes.data() + i * DTypeSize(dtype);
    if (dtype == DType::kF32) {
      std::memcpy(dst, &values[i], 4);
    } else if (dtype == DType::kF16) {
      const __half h = __float2half_rn(values[i]);
      std::memcpy(dst, &h, 2);
      a.values[i] = __half2float(h);
    } else {
      const __nv_bfloat16 h = __float2bfloat16_rn(values[i]);
      std::memcpy(dst, &h, 2);
      a.values[i] = __bfloat162float(h);
    }
  }
  return a;
}

inline std::vector<float> Uniform(std::mt19937& rng, int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline HostArray RandomArray(std::mt19937& rng, DType dtype, int64_t rows, int64_t cols,
                             float lo = -1.0f, float hi = 1.0f) {
  return MakeArray(dtype, rows, cols, Uniform(rng, rows * cols, lo, hi));
}

// The same tensor on both backends.
struct TensorPair {
  Tensor cpu;
  Tensor gpu;
};

// The fixture of every GPU test: skips without a device, else holds both backends.
class BackendPairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
    absl::StatusOr<std::unique_ptr<Ops>> gpu = NewCudaOps(0);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = std::move(*gpu);
    cpu_ = NewCpuOps(1);
  }

  TensorPair Upload(const HostArray& a) {
    TensorPair t{cpu_->Allocate(a.dtype, a.rows, a.cols), gpu_->Allocate(a.dtype, a.rows, a.cols)};
    cpu_->CopyFromHost(a.bytes.data(), t.cpu.view());
    gpu_->CopyFromHost(a.bytes.data(), t.gpu.view());
    return t;
  }
  // Zeroed F32 outputs on both backends.
  TensorPair Zeros(int64_t rows, int64_t cols) {
    return {cpu_->Allocate(DType::kF32, rows, cols), gpu_->Allocate(DType::kF32, rows, cols)};
  }
  static std::vector<float> Download(Ops& ops, const Tensor& t) {
    std::vector<float> out(t.view().numel());
    ops.CopyToHost(t.view(), out.data());
    return out;
  }
  std::vector<float> Cpu(const TensorPair& t) { return Download(*cpu_, t.cpu); }
  std::vector<float> Gpu(const TensorPair& t) { return Download(*gpu_, t.gpu); }

  std::unique_ptr<Ops> cpu_;
  std::unique_ptr<Ops> gpu_;
};

// Element-wise |gpu - cpu| <= tolerance[i]; reports the first few failures.
inline void ExpectWithin(const std::vector<float>& gpu, const std::vector<float>& cpu,
                         const std::vector<double>& tolerance) {
  ASSERT_EQ(gpu.size(), cpu.size());
  ASSERT_EQ(gpu.size(), tolerance.size());
  int failures = 0;
  for (size_t i = 0; i < gpu.size() && failures < 10; ++i) {
    const double diff = std::abs(static_cast<double>(gpu[i]) - cpu[i]);
    if (!(diff <= tolerance[i])) {
      ADD_FAILURE() << "element " << i << ": gpu " << gpu[i] << ", cpu " << cpu[i] << ", |diff| "
                    << diff << " > " << tolerance[i];
      ++failures;
    }
  }
}

// |gpu - cpu| <= abs_tol + rel_tol * |cpu| everywhere.
inline void ExpectNear(const std::vector<float>& gpu, const std::vector<float>& cpu, double abs_tol,
                       double rel_tol) {
  std::vector<double> tolerance(cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) tolerance[i] = abs_tol + rel_tol * std::abs(cpu[i]);
  ExpectWithin(gpu, cpu, tolerance);
}

// Bit-identical (copies and exact conversions).
inline void ExpectBitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      ADD_FAILURE() << "first difference at element " << i << ": " << a[i] << " vs " << b[i];
      return;
    }
  }
}

}  // namespace kvfold::testing
