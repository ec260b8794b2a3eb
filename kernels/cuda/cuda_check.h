// Error checks for CUDA runtime and cuBLAS calls. A failing call is a broken invariant (bad launch
// configuration, device fault, out of memory while serving), so it CHECK-fails with the error's
// name and description.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "glog/logging.h"

#define KVFOLD_CUDA_CHECK(expr)                                          \
  do {                                                                   \
    const cudaError_t kvfold_cuda_status = (expr);                       \
    CHECK(kvfold_cuda_status == cudaSuccess)                             \
        << #expr << ": " << cudaGetErrorName(kvfold_cuda_status) << " (" \
        << cudaGetErrorString(kvfold_cuda_status) << ")";                \
  } while (0)

#define KVFOLD_CUBLAS_CHECK(expr)                                             \
  do {                                                                        \
    const cublasStatus_t kvfold_cublas_status = (expr);                       \
    CHECK(kvfold_cublas_status == CUBLAS_STATUS_SUCCESS)                      \
        << #expr << ": " << cublasGetStatusName(kvfold_cublas_status) << " (" \
        << cublasGetStatusString(kvfold_cublas_status) << ")";                \
  } while (0)

// Right after a kernel launch: reports bad launch configurations at their source. Faults inside the
// kernel surface asynchronously, at the next synchronising call.
#define KVFOLD_CUDA_CHECK_LAUNCH() KVFOLD_CUDA_CHECK(cudaGetLastError())
