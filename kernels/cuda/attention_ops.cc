// CudaOps::WriteKv and CudaOps::FoldedPagedAttention: validation and head grouping on the host
// (kernels/attention_heads.h), then one upload and one launch each.
#include <vector>

#include "kernels/attention_heads.h"
#include "kernels/cuda/cuda_ops_impl.h"
#include "kernels/cuda/kernels.h"

namespace kvfold::cuda {
namespace {

// Where each query row sits: its sequence and its position (the batch was checked by
// PrepareFoldedAttention).
struct RowPlacement {
  std::vector<int32_t> seq;
  std::vector<int32_t> pos;
};

RowPlacement PlaceRows(const AttentionBatch& batch, int64_t num_rows) {
  RowPlacement placement;
  placement.seq.reserve(num_rows);
  placement.pos.reserve(num_rows);
  for (int32_t s = 0; s < batch.num_seqs(); ++s) {
    const int32_t q_len = batch.query_start[s + 1] - batch.query_start[s];
    for (int32_t j = 0; j < q_len; ++j) {
      placement.seq.push_back(s);
      placement.pos.push_back(batch.context_len[s] - q_len + j);
    }
  }
  return placement;
}

}  // namespace

void CudaOps::WriteKv(const TensorView& k, const TensorView& v, const AttentionBatch& batch,
                      const KvCacheLayer& cache) {
  CheckWriteKv(k, v, batch, cache);
  const auto num_rows = static_cast<int64_t>(batch.slot_mapping.size());
  if (num_rows == 0) return;
  const bool has_k = cache.num_k_heads > 0;
  Activate();
  LaunchWriteKv(has_k ? k.f32() : nullptr, has_k ? k.cols : 0, v.f32(), v.cols,
                DeviceArray(batch.slot_mapping), num_rows, cache.v.dtype,
                has_k ? cache.k.data : nullptr, cache.v.data, stream_);
}

void CudaOps::FoldedPagedAttention(const TensorView& q, const KvCacheLayer& k_layer,
                                   const KvCacheLayer& v_layer, const AttentionHeadMap& heads,
                                   const AttentionBatch& batch, int num_heads, float scale,
                                   TensorView out, const AttentionProbs* probs) {
  const AttentionHeadGroups groups =
      PrepareFoldedAttention(q, k_layer, v_layer, heads, batch, num_heads, out, probs);
  CHECK_LE(v_layer.head_dim, kMaxAttentionHeadDim) << "FoldedPagedAttention: head_dim";
  if (out.rows == 0) return;
  Activate();
  PagedAttentionParams params;
  // Step staging (cuda_step_graph_ops.cc): a staged batch uploads nothing here.
  if (!UseStagedAttentionArgs(batch, groups, params)) {
    const RowPlacement placement = PlaceRows(batch, out.rows);
    ArgPack pack;
    const size_t seq = pack.Add(absl::MakeConstSpan(placement.seq));
    const size_t pos = pack.Add(absl::MakeConstSpan(placement.pos));
    const size_t tables = pack.Add(batch.block_tables);
    const size_t num_groups = pack.Add(absl::MakeConstSpan(groups.num_groups));
    const size_t score = pack.Add(absl::MakeConstSpan(groups.score_head));
    const size_t k_head = pack.Add(absl::MakeConstSpan(groups.k_head));
    const size_t start = pack.Add(absl::MakeConstSpan(groups.member_start));
    const size_t out_head = pack.Add(absl::MakeConstSpan(groups.member_out_head));
    const size_t v_head = pack.Add(absl::MakeConstSpan(groups.member_v_head));
    const char* args = Upload(pack);
    params.row_seq = PackedAt<int32_t>(args, seq);
    params.row_pos = PackedAt<int32_t>(args, pos);
    params.block_tables = PackedAt<int32_t>(args, tables);
    params.num_groups = PackedAt<int32_t>(args, num_groups);
    params.group_score = PackedAt<int32_t>(args, score);
    params.group_k = PackedAt<int32_t>(args, k_head);
    params.member_start = PackedAt<int32_t>(args, start);
    params.member_out_head = PackedAt<int32_t>(args, out_head);
    params.member_v_head = PackedAt<int32_t>(args, v_head);
  }
  params.q = groups.reads_k ? q.f32() : nullptr;
  params.out = out.f32();
  params.k_cache = groups.reads_k ? k_layer.k.data : nullptr;
  params.v_cache = v_layer.v.data;
  params.k_stride = groups.reads_k ? k_layer.k.cols : 0;
  params.v_stride = v_layer.v.cols;
  params.kv_dtype = v_layer.v.dtype;
  params.per_seq_maps = groups.num_map_rows > 1;
  if (probs != nullptr) {
    params.probs = probs->p.f32();
    params.probs_cols = probs->p.cols;
    params.probs_mode = probs->mode == AttentionProbs::Mode::kRead ? 2 : 1;
  }
  params.num_rows = out.rows;
  params.max_blocks_per_seq = batch.max_blocks_per_seq;
  params.block_size = v_layer.block_size;
  params.num_heads = num_heads;
  params.num_score_heads = groups.num_score_heads;
  params.head_dim = v_layer.head_dim;
  params.scale = scale;
  LaunchPagedAttention(params, stream_);
}

}  // namespace kvfold::cuda
