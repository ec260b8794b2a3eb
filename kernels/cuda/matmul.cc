// CudaOps::MatMul: out = x · wᵀ (+ bias) through cuBLAS, in fixed-shape row chunks.
//
// Batch invariance: cuBLAS picks its kernel (tile shape, split-K) from the problem shape and the
// operands' alignment, so a row's result would change with the number of rows sharing the call.
// Here every GEMM is kRowChunk x m x k on 256-byte aligned, zero-padded scratch, so the kernel, and
// with it each output element's reduction order, depends only on the weight. Cost: up to
// kRowChunk - 1 padded rows per call (decode GEMMs are bound by reading the weight, so this is
// nearly free there), one staging copy of x and one of the result.
//
// Precision: F32 weights run an F32 GEMM with F32 compute (no TF32). F16/BF16 weights run on
// tensor cores with F32 accumulation and F32 output, after rounding the activations to the weight
// dtype: a relative error of up to 2^-11 (F16) or 2^-8 (BF16) per activation, so
// |out - exact| <= u * sum_i |x_i w_i| on top of F32 accumulation error. The CPU backend keeps
// activations in F32; tests/gpu/cuda_ops_test.cc holds the two to that bound.

#include <algorithm>
#include <climits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops_impl.h"
#include "kernels/cuda/kernels.h"

namespace kvfold::cuda {
namespace {

// Rows per cuBLAS call. Larger wastes more padding on small batches; smaller re-reads the weight
// more often on large ones.
constexpr int64_t kRowChunk = 128;
// Chunks staged at once: bounds the scratch at kChunksPerGroup * kRowChunk rows of x and of out.
constexpr int64_t kChunksPerGroup = 8;

cudaDataType_t CudaDataType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    default:
      break;
  }
  LOG(FATAL) << "unknown dtype";
}

}  // namespace

void CudaOps::MatMul(const TensorView& x, const TensorView& w, const TensorView* bias,
                     TensorView out) {
  const int64_t n = x.rows;
  const int64_t k = x.cols;
  const int64_t m = w.rows;
  CheckShape(x, DType::kF32, n, k, "MatMul x");
  // Quantized weights run natively on the CPU backend only, for now; LlamaModel uploads them as
  // BF16 (worker/device_weights.h), so only a direct caller can hit this.
  CHECK(!IsQuantized(w.dtype)) << "CUDA MatMul: " << DTypeName(w.dtype) << " weights unsupported";
  CheckShape(w, w.dtype, m, k, "MatMul w");
  CheckShape(out, DType::kF32, n, m, "MatMul out");
  if (bias != nullptr) CheckShape(*bias, DType::kF32, 1, m, "MatMul bias");
  CHECK(out.data != x.data || out.numel() == 0) << "MatMul: out must not alias x";
  CHECK(k > 0 && k <= INT_MAX && m <= INT_MAX) << "MatMul: k " << k << ", m " << m;
  DcheckOnDevice(w.data, "MatMul w");
  if (n == 0 || m == 0) return;
  Activate();

  const DType in_dtype = w.dtype;  // activations are staged in the weight's dtype
  const cudaDataType_t cuda_dtype = CudaDataType(in_dtype);
  const float alpha = 1.0f;
  const float beta = 0.0f;
  for (int64_t begin = 0; begin < n; begin += kChunksPerGroup * kRowChunk) {
    const int64_t rows = std::min(kChunksPerGroup * kRowChunk, n - begin);
    const int64_t num_chunks = (rows + kRowChunk - 1) / kRowChunk;
    const int64_t padded = num_chunks * kRowChunk;
    char* in = static_cast<char*>(
        ReserveScratch(matmul_input_, static_cast<size_t>(padded * k) * DTypeSize(in_dtype)));
    auto* result = static_cast<float*>(
        ReserveScratch(matmul_output_, static_cast<size_t>(padded * m) * sizeof(float)));
    LaunchConvertPadRows(x.f32() + begin * k, rows, padded, k, in_dtype, in, stream_);
    for (int64_t c = 0; c < num_chunks; ++c) {
      // Column-major view: resultᵀ [m, kRowChunk] = w [k, m]ᵀ · inᵀ [k, kRowChunk].
      KVFOLD_CUBLAS_CHECK(cublasGemmEx(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(kRowChunk),
          static_cast<int>(k), &alpha, w.data, cuda_dtype, static_cast<int>(k),
          in + static_cast<size_t>(c * kRowChunk * k) * DTypeSize(in_dtype), cuda_dtype,
          static_cast<int>(k), &beta, result + c * kRowChunk * m, CUDA_R_32F, static_cast<int>(m),
          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    LaunchCopyAddBias(result, bias == nullptr ? nullptr : bias->f32(), rows, m,
                      out.f32() + begin * m, stream_);
  }
}

}  // namespace kvfold::cuda
