// The CUDA backend's Ops implementation, shared by the files that define its methods:
// cuda_ops.cc (lifecycle, memory, element-wise ops), attention_ops.cc (WriteKv, RopeWriteKv,
// FoldedPagedAttention) and matmul.cc (MatMul).
//
// Everything runs in order on one stream the object owns; CopyToHost is the only call that waits
// for it. A host span staged for the step (StageStepInputs: one pinned copy per step,
// step_staging.h) is read from its device copy; any other is uploaded per call into a grow-only
// device scratch (one pageable copy per op call). Step graphs: step_graphs.h.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string_view>

#include "kernels/attention_heads.h"
#include "kernels/cuda/arg_pack.h"
#include "kernels/cuda/constant_staging.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/step_graphs.h"
#include "kernels/cuda/step_staging.h"
#include "kernels/ops.h"

namespace kvfold::cuda {

class CudaOps final : public Ops {
 public:
  // Takes ownership of `stream` and `cublas` (already bound to `stream`).
  CudaOps(int device_ordinal, cudaStream_t stream, cublasHandle_t cublas);
  ~CudaOps() override;
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  Device device() const override { return Device::kCuda; }
  std::string_view name() const override { return "cuda"; }

  Tensor Allocate(DType dtype, int64_t rows, int64_t cols) override;
  absl::StatusOr<Tensor> TryAllocate(DType dtype, int64_t rows, int64_t cols) override;
  void CopyFromHost(const void* src, TensorView dst) override;
  void CopyToHost(const TensorView& src, void* dst) override;

  void Embedding(absl::Span<const int32_t> token_ids, const TensorView& table,
                 TensorView out) override;
  void RmsNorm(const TensorView& x, const TensorView& weight, float eps, TensorView out) override;
  void MatMul(const TensorView& x, const TensorView& w, const TensorView* bias,
              TensorView out) override;
  void Rope(TensorView x, int num_heads, int head_dim, absl::Span<const int32_t> positions,
            const RopeTable& table) override;
  void WriteKv(const TensorView& k, const TensorView& v, const AttentionBatch& batch,
               const KvCacheLayer& cache) override;
  void RopeWriteKv(TensorView q, int num_q_heads, TensorView k, const TensorView& v, int head_dim,
                   absl::Span<const int32_t> positions, const RopeTable& table,
                   const AttentionBatch& batch, const KvCacheLayer& cache) override;
  void FoldedPagedAttention(const TensorView& q, const KvCacheLayer& k_layer,
                            const KvCacheLayer& v_layer, const AttentionHeadMap& heads,
                            const AttentionBatch& batch, int num_heads, float scale, TensorView out,
                            const AttentionProbs* probs) override;
  void SiluMul(const TensorView& gate, const TensorView& up, TensorView out) override;
  void Add(TensorView x, const TensorView& y) override;
  void GatherRows(const TensorView& x, absl::Span<const int32_t> rows, TensorView out) override;

  // Step staging and graphs (cuda_step_graph_ops.cc).
  void StageStepInputs(absl::Span<const HostArray> arrays, const AttentionBatch* attention,
                       int64_t region) override;
  void EndStep() override;
  bool SupportsStepGraphs() const override { return true; }
  absl::Status BeginStepCapture(int64_t key) override;
  absl::Status EndStepCapture(int64_t key) override;
  bool HasStepGraph(int64_t key) const override { return graphs_.Has(key); }
  absl::Status ReplayStepGraph(int64_t key) override;
  void DropStepGraphs() override;

  cudaStream_t stream() const { return stream_; }

 private:
  // Makes this object's device current on the calling thread.
  void Activate() const;
  // Copies `pack` to the argument scratch and returns its device address. The source is pageable,
  // so cudaMemcpyAsync has staged it when it returns and `pack` may die at once; the scratch is
  // rewritten by the next call only after this call's kernels, by stream order.
  const char* Upload(const ArgPack& pack);
  // The device copy of `host`: its staged copy when StageStepInputs staged it, else uploaded.
  template <typename T>
  const T* DeviceArray(absl::Span<const T> host) {
    if (const T* staged = staging_.Find(host)) return staged;
    ArgPack pack;
    const size_t offset = pack.Add(host);
    return PackedAt<T>(Upload(pack), offset);
  }
  // Fills `params`' row placement, block tables and head groups from the staged step (the groups
  // through the constant cache) and returns true; false when `batch` was not staged.
  bool UseStagedAttentionArgs(const AttentionBatch& batch, const AttentionHeadGroups& groups,
                              PagedAttentionParams& params);
  // Reserves a matmul or attention scratch; a grown (moved) buffer drops the step graphs that read
  // the old one.
  void* ReserveScratch(DeviceBuffer& buffer, size_t bytes);

  int device_ordinal_;
  cudaStream_t stream_;
  cublasHandle_t cublas_;
  DeviceBuffer args_;
  DeviceBuffer matmul_input_;
  DeviceBuffer matmul_output_;
  DeviceBuffer cublas_workspace_;  // cuBLAS allocates nothing itself, so GEMMs can be captured
  // FoldedPagedAttention's split-K partials and softmax statistics (grown through ReserveScratch).
  DeviceBuffer attention_workspace_;
  StepStaging staging_;
  ConstantStaging constants_;
  StepGraphs graphs_;
};

// Shape and dtype checks shared by the method files. Each CHECK-fails naming `what`.
void CheckShape(const TensorView& t, DType dtype, int64_t rows, int64_t cols,
                std::string_view what);
void CheckData(const TensorView& t, std::string_view what);
// Debug builds only: `ptr` is device (or managed) memory, not a host pointer by mistake.
void DcheckOnDevice(const void* ptr, std::string_view what);

}  // namespace kvfold::cuda
