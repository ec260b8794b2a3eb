#include "server/cli/device_setup.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/cpu/cpu_ops.h"
#include "server/cli/common_flags.h"
#ifdef KVFOLD_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_ops.h"
#endif

namespace kvfold::cli {
namespace {

constexpr char kNoCudaBuild[] =
    "--device cuda: this kvfold was built without CUDA (configure where nvcc is found, without "
    "-DKVFOLD_CUDA=OFF)";

}  // namespace

std::string_view DeviceName(Device device) { return device == Device::kCuda ? "cuda" : "cpu"; }

absl::StatusOr<Device> DeviceFromFlags() {
  const std::string name = absl::GetFlag(FLAGS_device);
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda") return Device::kCuda;
  return absl::InvalidArgumentError(absl::StrFormat("--device %s: expected cpu or cuda", name));
}

absl::StatusOr<std::unique_ptr<Ops>> CreateOps(Device device, int threads, int cuda_ordinal) {
  if (device == Device::kCpu) return CreateCpuOps(threads);  // a bad KVFOLD_ISA: an error
#ifdef KVFOLD_HAVE_CUDA
  if (!CudaDeviceAvailable()) {
    return absl::FailedPreconditionError(
        "--device cuda: no CUDA device is visible (no GPU, no "
        "driver, or CUDA_VISIBLE_DEVICES hides them)");
  }
  absl::StatusOr<std::unique_ptr<Ops>> ops = NewCudaOps(cuda_ordinal);
  if (!ops.ok()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("--device cuda: %s", ops.status().message()));
  }
  return ops;
#else
  (void)threads;
  (void)cuda_ordinal;
  return absl::FailedPreconditionError(kNoCudaBuild);
#endif
}

absl::StatusOr<DeviceMemory> QueryDeviceMemory(int cuda_ordinal) {
#ifdef KVFOLD_HAVE_CUDA
  absl::StatusOr<CudaMemoryInfo> info = QueryCudaMemory(cuda_ordinal);
  if (!info.ok()) return info.status();
  return DeviceMemory{info->free_bytes, info->total_bytes};
#else
  (void)cuda_ordinal;
  return absl::FailedPreconditionError(kNoCudaBuild);
#endif
}

absl::StatusOr<std::unique_ptr<DeviceSampler>> CreateDeviceSampler(Device device, int cuda_ordinal,
                                                                   Ops* ops) {
  if (device == Device::kCpu) return std::unique_ptr<DeviceSampler>();
#ifdef KVFOLD_HAVE_CUDA
  return NewCudaSampler(cuda_ordinal, ops != nullptr ? CudaOpsStream(*ops) : nullptr);
#else
  (void)ops;
  return absl::FailedPreconditionError(kNoCudaBuild);
#endif
}

absl::Status CheckTensorParallelDevice(Device device, int tensor_parallel_size, int nnodes) {
  if (device != Device::kCuda || (tensor_parallel_size <= 1 && nnodes <= 1)) {
    return absl::OkStatus();
  }
#if !defined(KVFOLD_HAVE_CUDA)
  return absl::FailedPreconditionError(kNoCudaBuild);
#elif !defined(KVFOLD_HAVE_NCCL)
  return absl::FailedPreconditionError(
      "--device cuda: tensor parallelism over GPUs needs NCCL, and this kvfold was built without "
      "it (configure where nccl.h and libnccl are found), or use --tensor-parallel-size 1");
#else
  int visible = 0;
  if (cudaGetDeviceCount(&visible) != cudaSuccess) {
    (void)cudaGetLastError();
    visible = 0;
  }
  if (visible == 0) {
    return absl::FailedPreconditionError(
        "--device cuda: no CUDA device is visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES "
        "hides them)");
  }
  // One rank per GPU on this node: every rank on one node, one rank per node across nodes.
  const int ranks_here = nnodes > 1 ? 1 : tensor_parallel_size;
  if (ranks_here > visible) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "--device cuda: --tensor-parallel-size %d runs one rank per GPU, but %d CUDA device(s) "
        "are visible (CUDA_VISIBLE_DEVICES)",
        tensor_parallel_size, visible));
  }
  return absl::OkStatus();
#endif
}

}  // namespace kvfold::cli
