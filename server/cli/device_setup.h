// Which backend runs the model (--device cpu|cuda) and its ops. The CLI builds with or without
// CUDA (KVFOLD_HAVE_CUDA, from kvfold_kernels_cuda); without it `--device cuda` is an error.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/sampling.h"
#include "kernels/ops.h"

namespace kvfold::cli {

enum class Device { kCpu, kCuda };

std::string_view DeviceName(Device device);

// --device: "cpu" (the default) or "cuda".
absl::StatusOr<Device> DeviceFromFlags();

// The backend's ops: CPU with `threads` (0: every core), or CUDA device `cuda_ordinal`. A CUDA
// build run without a usable GPU, or a build without CUDA, gets FailedPrecondition naming why.
absl::StatusOr<std::unique_ptr<Ops>> CreateOps(Device device, int threads, int cuda_ordinal = 0);

// The sampler a CUDA model's executor uses, so a decode step copies back token ids instead of
// logits; null on the CPU. With `ops` (the model's CUDA ops) it waits for their stream with an
// event rather than for the whole device.
absl::StatusOr<std::unique_ptr<DeviceSampler>> CreateDeviceSampler(Device device,
                                                                   int cuda_ordinal = 0,
                                                                   Ops* ops = nullptr);

// Free and total memory of CUDA device `cuda_ordinal` (cudaMemGetInfo).
struct DeviceMemory {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};
absl::StatusOr<DeviceMemory> QueryDeviceMemory(int cuda_ordinal);

// Tensor parallelism over GPUs, checked before any follower starts: --device cuda with
// --tensor-parallel-size > 1 (or several nodes) needs a build with CUDA and NCCL, and one visible
// GPU per rank on this node (every rank of one node; one rank per node across nodes).
absl::Status CheckTensorParallelDevice(Device device, int tensor_parallel_size, int nnodes);

}  // namespace kvfold::cli
