#include "kernels/cuda/cuda_ops.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops_impl.h"
#include "kernels/cuda/kernels.h"

namespace kvfold {
namespace cuda {
namespace {

void FreeDevice(void* ptr) {
  const cudaError_t status = cudaFree(ptr);
  // Tensors destroyed during process exit may outlive the runtime.
  LOG_IF(ERROR, status != cudaSuccess && status != cudaErrorCudartUnloading)
      << "cudaFree: " << cudaGetErrorString(status);
}

}  // namespace

void CheckShape(const TensorView& t, DType dtype, int64_t rows, int64_t cols,
                std::string_view what) {
  CHECK(t.dtype == dtype) << what << ": dtype " << DTypeName(t.dtype) << ", want "
                          << DTypeName(dtype);
  CHECK(t.rows == rows && t.cols == cols) << what << ": shape [" << t.rows << ", " << t.cols
                                          << "], want [" << rows << ", " << cols << "]";
  CheckData(t, what);
}

void CheckData(const TensorView& t, std::string_view what) {
  CHECK(t.rows >= 0 && t.cols >= 0) << what << ": negative shape";
  CHECK(t.data != nullptr || t.numel() == 0) << what << ": null data";
}

void DcheckOnDevice(const void* ptr, std::string_view what) {
#ifndef NDEBUG
  if (ptr == nullptr) return;
  cudaPointerAttributes attributes{};
  KVFOLD_CUDA_CHECK(cudaPointerGetAttributes(&attributes, ptr));
  DCHECK(attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged)
      << what << " is not device memory: upload it with Allocate + CopyFromHost";
#endif
}

CudaOps::CudaOps(int device_ordinal, cudaStream_t stream, cublasHandle_t cublas)
    : device_ordinal_(device_ordinal), stream_(stream), cublas_(cublas) {
  // A workspace of our own: cuBLAS then allocates nothing per call, which stream capture (step
  // graphs) requires. 32 MiB is NVIDIA's recommendation for Hopper; it covers older GPUs too.
  constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
  Activate();
  KVFOLD_CUBLAS_CHECK(cublasSetWorkspace(
      cublas_, cublas_workspace_.Reserve(kCublasWorkspaceBytes, stream_), kCublasWorkspaceBytes));
}

CudaOps::~CudaOps() {
  Activate();
  KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_));
  KVFOLD_CUBLAS_CHECK(cublasDestroy(cublas_));
  KVFOLD_CUDA_CHECK(cudaStreamDestroy(stream_));
}

void CudaOps::Activate() const { KVFOLD_CUDA_CHECK(cudaSetDevice(device_ordinal_)); }

const char* CudaOps::Upload(const ArgPack& pack) {
  if (pack.size() == 0) return nullptr;
  CHECK(!graphs_.capturing()) << "an op uploads host arguments during a step graph capture: stage "
                                 "them first (Ops::StageStepInputs)";
  char* base = static_cast<char*>(args_.Reserve(pack.size(), stream_));
  KVFOLD_CUDA_CHECK(
      cudaMemcpyAsync(base, pack.data(), pack.size(), cudaMemcpyHostToDevice, stream_));
  return base;
}

Tensor CudaOps::Allocate(DType dtype, int64_t rows, int64_t cols) {
  absl::StatusOr<Tensor> tensor = TryAllocate(dtype, rows, cols);
  CHECK(tensor.ok()) << tensor.status();
  return *std::move(tensor);
}

absl::StatusOr<Tensor> CudaOps::TryAllocate(DType dtype, int64_t rows, int64_t cols) {
  CHECK(rows >= 0 && cols >= 0) << "Allocate: negative shape [" << rows << ", " << cols << "]";
  CHECK(!graphs_.capturing()) << "Allocate during a step graph capture";
  Activate();
  TensorView view{nullptr, dtype, rows, cols};
  if (view.nbytes() == 0) return Tensor(view, &FreeDevice);
  if (const cudaError_t e = cudaMalloc(&view.data, view.nbytes()); e != cudaSuccess) {
    (void)cudaGetLastError();  // an allocation failure is not sticky: the device stays usable
    size_t free_bytes = 0, total_bytes = 0;
    const bool known = cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess;
    (void)cudaGetLastError();
    const std::string what = absl::StrCat("CUDA device ", device_ordinal_, ": cannot allocate ",
                                          view.nbytes(), " bytes (", std::string(DTypeName(dtype)),
                                          " [", rows, ", ", cols, "]): ", cudaGetErrorString(e));
    const std::string free =
        known ? absl::StrCat("; ", free_bytes, " of ", total_bytes, " bytes free") : "";
    if (e == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(what + free);
    return absl::InternalError(what + free);
  }
  // Zeroed in stream order: every later op on this object sees the zeros.
  KVFOLD_CUDA_CHECK(cudaMemsetAsync(view.data, 0, view.nbytes(), stream_));
  return Tensor(view, &FreeDevice);
}

void CudaOps::CopyFromHost(const void* src, TensorView dst) {
  CheckData(dst, "CopyFromHost dst");
  if (dst.nbytes() == 0) return;
  CHECK(src != nullptr) << "CopyFromHost: null src";
  CHECK(!graphs_.capturing()) << "CopyFromHost during a step graph capture";
  Activate();
  KVFOLD_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.nbytes(), cudaMemcpyHostToDevice, stream_));
  // `src` may be pinned memory, which the copy reads asynchronously: wait so the caller may
  // reuse it. Uploads are rare (weights, test inputs); per-step host data goes through Upload.
  KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaOps::CopyToHost(const TensorView& src, void* dst) {
  CheckData(src, "CopyToHost src");
  if (src.nbytes() == 0) return;
  CHECK(dst != nullptr) << "CopyToHost: null dst";
  CHECK(!graphs_.capturing()) << "CopyToHost during a step graph capture";
  Activate();
  KVFOLD_CUDA_CHECK(cudaMemcpyAsync(dst, src.data, src.nbytes(), cudaMemcpyDeviceToHost, stream_));
  KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaOps::Embedding(absl::Span<const int32_t> token_ids, const TensorView& table,
                        TensorView out) {
  const auto num_tokens = static_cast<int64_t>(token_ids.size());
  CheckData(table, "Embedding table");
  CHECK(!IsQuantized(table.dtype))
      << "CUDA Embedding: " << DTypeName(table.dtype) << " tables unsupported";
  CheckShape(out, DType::kF32, num_tokens, table.cols, "Embedding out");
  for (const int32_t id : token_ids) {
    CHECK(id >= 0 && id < table.rows)
        << "Embedding: token id " << id << " outside [0, " << table.rows << ")";
  }
  DcheckOnDevice(table.data, "Embedding table");
  if (out.numel() == 0) return;
  Activate();
  LaunchEmbedding(DeviceArray(token_ids), num_tokens, table.data, table.dtype, table.cols,
                  out.f32(), stream_);
}

void CudaOps::RmsNorm(const TensorView& x, const TensorView& weight, float eps, TensorView out) {
  CheckShape(x, DType::kF32, x.rows, x.cols, "RmsNorm x");
  CheckShape(weight, DType::kF32, 1, x.cols, "RmsNorm weight");
  CheckShape(out, DType::kF32, x.rows, x.cols, "RmsNorm out");
  CHECK_GE(eps, 0.0f) << "RmsNorm eps";
  Activate();
  LaunchRmsNorm(x.f32(), weight.f32(), eps, x.rows, x.cols, out.f32(), stream_);
}

void CudaOps::Rope(TensorView x, int num_heads, int head_dim, absl::Span<const int32_t> positions,
                   const RopeTable& table) {
  CHECK(num_heads > 0 && head_dim > 0 && head_dim % 2 == 0)
      << "Rope: num_heads " << num_heads << ", head_dim " << head_dim << " (must be even)";
  CheckShape(x, DType::kF32, static_cast<int64_t>(positions.size()),
             static_cast<int64_t>(num_heads) * head_dim, "Rope x");
  const TensorView& cos_sin = table.cos_sin;
  CheckShape(cos_sin, DType::kF32, cos_sin.rows, head_dim, "Rope table");
  for (const int32_t pos : positions) {
    CHECK(pos >= 0 && pos < cos_sin.rows)
        << "Rope: position " << pos << " outside the table's [0, " << cos_sin.rows << ")";
  }
  if (x.numel() == 0) return;
  Activate();
  LaunchRope(x.f32(), x.rows, num_heads, head_dim, DeviceArray(positions), cos_sin.f32(), stream_);
}

void CudaOps::SiluMul(const TensorView& gate, const TensorView& up, TensorView out) {
  CheckShape(gate, DType::kF32, gate.rows, gate.cols, "SiluMul gate");
  CheckShape(up, DType::kF32, gate.rows, gate.cols, "SiluMul up");
  CheckShape(out, DType::kF32, gate.rows, gate.cols, "SiluMul out");
  Activate();
  LaunchSiluMul(gate.f32(), up.f32(), gate.numel(), out.f32(), stream_);
}

void CudaOps::Add(TensorView x, const TensorView& y) {
  CheckShape(x, DType::kF32, x.rows, x.cols, "Add x");
  CheckShape(y, DType::kF32, x.rows, x.cols, "Add y");
  Activate();
  LaunchAdd(x.f32(), y.f32(), x.numel(), stream_);
}

void CudaOps::GatherRows(const TensorView& x, absl::Span<const int32_t> rows, TensorView out) {
  CheckData(x, "GatherRows x");
  CheckShape(out, x.dtype, static_cast<int64_t>(rows.size()), x.cols, "GatherRows out");
  for (const int32_t row : rows) {
    CHECK(row >= 0 && row < x.rows)
        << "GatherRows: row " << row << " outside [0, " << x.rows << ")";
  }
  if (out.numel() == 0) return;
  Activate();
  LaunchGatherRows(x.data, DeviceArray(rows), out.rows,
                   x.cols * static_cast<int64_t>(DTypeSize(x.dtype)), out.data, stream_);
}

}  // namespace cuda

bool CudaDeviceAvailable() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: no driver or no device is an answer, not a fault
    return false;
  }
  return count > 0;
}

void* CudaOpsStream(Ops& ops) {
  CHECK(ops.device() == Device::kCuda) << "CudaOpsStream: " << ops.name() << " ops";
  return static_cast<cuda::CudaOps&>(ops).stream();
}

absl::StatusOr<CudaMemoryInfo> QueryCudaMemory(int device_ordinal) {
  size_t free_bytes = 0, total_bytes = 0;
  cudaError_t e = cudaSetDevice(device_ordinal);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();  // frees queued behind work count as used
  if (e == cudaSuccess) e = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::UnavailableError(std::string("cudaMemGetInfo: ") + cudaGetErrorString(e));
  }
  return CudaMemoryInfo{static_cast<int64_t>(free_bytes), static_cast<int64_t>(total_bytes)};
}

absl::StatusOr<std::unique_ptr<Ops>> NewCudaOps(int device_ordinal) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::UnavailableError(std::string("CUDA: no usable device: ") +
                                  cudaGetErrorString(status));
  }
  if (count == 0) return absl::UnavailableError("CUDA: no device");
  if (device_ordinal < 0 || device_ordinal >= count) {
    return absl::InvalidArgumentError("CUDA: device " + std::to_string(device_ordinal) +
                                      " outside [0, " + std::to_string(count) + ")");
  }
  if (const cudaError_t e = cudaSetDevice(device_ordinal); e != cudaSuccess) {
    return absl::UnavailableError(std::string("cudaSetDevice: ") + cudaGetErrorString(e));
  }
  cudaStream_t stream = nullptr;
  if (const cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
      e != cudaSuccess) {
    return absl::UnavailableError(std::string("cudaStreamCreate: ") + cudaGetErrorString(e));
  }
  cublasHandle_t cublas = nullptr;
  if (const cublasStatus_t e = cublasCreate(&cublas); e != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(stream);
    return absl::UnavailableError(std::string("cublasCreate: ") + cublasGetStatusString(e));
  }
  KVFOLD_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  // F32 accumulation everywhere: no TF32, no reduced-precision split-K reductions, and no atomics
  // (the default, stated here because determinism depends on it).
  KVFOLD_CUBLAS_CHECK(cublasSetMathMode(
      cublas, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                        CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  KVFOLD_CUBLAS_CHECK(cublasSetAtomicsMode(cublas, CUBLAS_ATOMICS_NOT_ALLOWED));
  return std::make_unique<cuda::CudaOps>(device_ordinal, stream, cublas);
}

}  // namespace kvfold
