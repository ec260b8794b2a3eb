// The CUDA backend of the op interface. Every TensorView it receives (activations, weights, KV
// cache) must live on its device: upload weights with Allocate + CopyFromHost. Host spans (token
// ids, positions, block tables, slot mapping) stay on the host and are copied per call.
//
// Numerics follow ops.h: F32 accumulation, and every reduction (norms, attention, cuBLAS GEMMs run
// in fixed-shape row chunks) in an order that does not depend on the rest of the batch. MatMul with
// F16/BF16 weights rounds activations to the weight dtype first (see matmul.cc).
//
// An Ops object is driven by one thread at a time; its work is queued in order on its own stream.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace kvfold {

// True when the CUDA runtime loads and sees at least one device.
bool CudaDeviceAvailable();

// Ops on device `device_ordinal`, running in order on one stream the ops object owns. Fails when
// the runtime sees no device or the ordinal is out of range.
absl::StatusOr<std::unique_ptr<Ops>> NewCudaOps(int device_ordinal = 0);

// The cudaStream_t that `ops` (made by NewCudaOps; CHECKed) queues its work on, so other CUDA work
// (device sampling, NCCL collectives) can order itself after the ops' work with an event instead
// of synchronising the whole device.
void* CudaOpsStream(Ops& ops);

// Free and total memory of device `device_ordinal` (cudaMemGetInfo), for the GPU memory plan.
struct CudaMemoryInfo {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};
absl::StatusOr<CudaMemoryInfo> QueryCudaMemory(int device_ordinal = 0);

}  // namespace kvfold
