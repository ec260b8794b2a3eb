// CudaOps' step staging and step graphs (Ops::StageStepInputs and friends in ops.h): the glue
// between the op methods and step_staging.h, constant_staging.h and step_graphs.h.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops_impl.h"

namespace kvfold::cuda {

void CudaOps::StageStepInputs(absl::Span<const HostArray> arrays, const AttentionBatch* attention,
                              int64_t region) {
  CHECK(!graphs_.capturing()) << "StageStepInputs during a step graph capture";
  Activate();
  // A graph region that moved invalidates its graph, which reads the old addresses.
  if (staging_.Stage(arrays, attention, region, stream_) && region != kEagerRegion) {
    graphs_.Drop(region);  // Stage synchronised the stream before moving the region
  }
}

void CudaOps::EndStep() { staging_.Clear(); }

absl::Status CudaOps::BeginStepCapture(int64_t key) {
  Activate();
  return graphs_.Begin(key, stream_);
}

absl::Status CudaOps::EndStepCapture(int64_t key) {
  Activate();
  return graphs_.End(key, stream_);
}

absl::Status CudaOps::ReplayStepGraph(int64_t key) {
  Activate();
  return graphs_.Replay(key, stream_);
}

void CudaOps::DropStepGraphs() {
  CHECK(!graphs_.capturing()) << "DropStepGraphs during a step graph capture";
  Activate();
  KVFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_));  // no replay may still be running
  graphs_.DropAll();
}

bool CudaOps::UseStagedAttentionArgs(const AttentionBatch& batch, const AttentionHeadGroups& groups,
                                     PagedAttentionParams& params) {
  const std::optional<StepStaging::RowPlacement> rows = staging_.FindRows(batch);
  const int32_t* tables = staging_.Find(batch.block_tables);
  if (!rows.has_value() || (tables == nullptr && !batch.block_tables.empty())) return false;
  // The head groups repeat every step (one layout per layer mode): uploaded once, then cached.
  ArgPack pack;
  const size_t num_groups = pack.Add(absl::MakeConstSpan(groups.num_groups));
  const size_t score = pack.Add(absl::MakeConstSpan(groups.score_head));
  const size_t k_head = pack.Add(absl::MakeConstSpan(groups.k_head));
  const size_t start = pack.Add(absl::MakeConstSpan(groups.member_start));
  const size_t out_head = pack.Add(absl::MakeConstSpan(groups.member_out_head));
  const size_t v_head = pack.Add(absl::MakeConstSpan(groups.member_v_head));
  const char* args = constants_.Get(pack, stream_);
  params.row_seq = rows->seq;
  params.row_pos = rows->pos;
  params.block_tables = tables;
  params.num_groups = PackedAt<int32_t>(args, num_groups);
  params.group_score = PackedAt<int32_t>(args, score);
  params.group_k = PackedAt<int32_t>(args, k_head);
  params.member_start = PackedAt<int32_t>(args, start);
  params.member_out_head = PackedAt<int32_t>(args, out_head);
  params.member_v_head = PackedAt<int32_t>(args, v_head);
  return true;
}

void* CudaOps::ReserveScratch(DeviceBuffer& buffer, size_t bytes) {
  void* before = buffer.data();
  void* data = buffer.Reserve(bytes, stream_);
  if (data != before && before != nullptr) {
    graphs_.DropAll();  // Reserve synchronised the stream before freeing the old buffer
  }
  return data;
}

}  // namespace kvfold::cuda
