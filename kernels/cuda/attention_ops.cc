// CudaOps::WriteKv, CudaOps::RopeWriteKv (RoPE of q and k fused with the K/V write: one kernel)
// and CudaOps::FoldedPagedAttention: validation and head grouping on the host
// (kernels/attention_heads.h), then one upload and the launches. Attention rows are split by
// their own sequence's shape only: one-row sequences go to the split-K decode kernels, longer
// chunks to the tiled prefill kernel (kernels/cuda/kernels.h); both give the same bits.
#include <algorithm>
#include <atomic>
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

// Which kernel serves each row, from its own sequence's shape: rows of one-row sequences go to
// the split-K decode kernels, longer chunks to the prefill kernel in tiles. A batch of decode
// rows only needs no lists (row i is decode row i), so a step graph's decode step uploads nothing.
struct RowSplit {
  bool all_decode = true;
  std::vector<int32_t> decode_rows;
  std::vector<int32_t> tile_first_row;
  std::vector<int32_t> tile_num_rows;
};

RowSplit SplitRows(const AttentionBatch& batch) {
  RowSplit split;
  for (int32_t s = 0; s < batch.num_seqs(); ++s) {
    split.all_decode &= batch.query_start[s + 1] - batch.query_start[s] == 1;
  }
  if (split.all_decode) return split;
  for (int32_t s = 0; s < batch.num_seqs(); ++s) {
    const int32_t first = batch.query_start[s], q_len = batch.query_start[s + 1] - first;
    if (q_len == 1) split.decode_rows.push_back(first);
    for (int32_t j = 0; q_len > 1 && j < q_len; j += kPrefillTileRows) {
      split.tile_first_row.push_back(first + j);
      split.tile_num_rows.push_back(std::min(kPrefillTileRows, q_len - j));
    }
  }
  return split;
}

std::atomic<size_t> max_score_workspace_bytes{size_t{256} << 20};

}  // namespace

void SetMaxScoreWorkspaceBytes(size_t bytes) { max_score_workspace_bytes = bytes; }
size_t MaxScoreWorkspaceBytes() { return max_score_workspace_bytes; }

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

void CudaOps::RopeWriteKv(TensorView q, int num_q_heads, TensorView k, const TensorView& v,
                          int head_dim, absl::Span<const int32_t> positions, const RopeTable& table,
                          const AttentionBatch& batch, const KvCacheLayer& cache) {
  const auto num_rows = static_cast<int64_t>(positions.size());
  CHECK(num_q_heads > 0 && head_dim > 0 && head_dim % 2 == 0)
      << "RopeWriteKv: num_q_heads " << num_q_heads << ", head_dim " << head_dim
      << " (must be even)";
  CheckShape(q, DType::kF32, num_rows, int64_t{num_q_heads} * head_dim, "RopeWriteKv q");
  CHECK_EQ(static_cast<int64_t>(batch.slot_mapping.size()), num_rows)
      << "RopeWriteKv: one slot per position";
  CHECK(cache.head_dim == head_dim || (cache.num_k_heads == 0 && cache.num_v_heads == 0))
      << "RopeWriteKv: head_dim " << head_dim << ", cache's " << cache.head_dim;
  CheckWriteKv(k, v, batch, cache);
  const TensorView& cos_sin = table.cos_sin;
  CheckShape(cos_sin, DType::kF32, cos_sin.rows, head_dim, "RopeWriteKv table");
  for (const int32_t pos : positions) {
    CHECK(pos >= 0 && pos < cos_sin.rows)
        << "RopeWriteKv: position " << pos << " outside the table's [0, " << cos_sin.rows << ")";
  }
  if (num_rows == 0) return;
  Activate();
  // Positions and slots from the step's staged copies (so a step graph replays the next step's);
  // whichever was not staged goes up in one pack: two Uploads would share one scratch.
  const int32_t* device_positions = staging_.Find(positions);
  const int64_t* device_slots = staging_.Find(batch.slot_mapping);
  if (device_positions == nullptr || device_slots == nullptr) {
    ArgPack pack;
    const size_t positions_at = device_positions == nullptr ? pack.Add(positions) : 0;
    const size_t slots_at = device_slots == nullptr ? pack.Add(batch.slot_mapping) : 0;
    const char* args = Upload(pack);
    if (device_positions == nullptr) device_positions = PackedAt<int32_t>(args, positions_at);
    if (device_slots == nullptr) device_slots = PackedAt<int64_t>(args, slots_at);
  }
  RopeWriteKvArgs args;
  args.q = q.f32();
  args.k = cache.num_k_heads > 0 ? k.f32() : nullptr;
  args.v = v.f32();
  args.v_width = v.cols;
  args.num_tokens = num_rows;
  args.num_q_heads = num_q_heads;
  args.num_k_heads = cache.num_k_heads;
  args.head_dim = head_dim;
  args.positions = device_positions;
  args.table = cos_sin.f32();
  args.slots = device_slots;
  LaunchRopeWriteKv(args, cache.v.dtype, cache.num_k_heads > 0 ? cache.k.data : nullptr,
                    cache.v.data, stream_);
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
  const RowSplit split = SplitRows(batch);
  // Step staging (cuda_step_graph_ops.cc): a staged batch uploads nothing for its rows, tables and
  // head groups; everything else goes up in one pack (Upload reuses one scratch per call).
  const bool staged = UseStagedAttentionArgs(batch, groups, params);
  ArgPack pack;
  RowPlacement placement;
  size_t seq = 0, pos = 0, tables = 0, num_groups = 0, score = 0, k_head = 0, start = 0;
  size_t out_head = 0, v_head = 0, decode_rows = 0, tile_first = 0, tile_rows = 0;
  if (!staged) {
    placement = PlaceRows(batch, out.rows);
    seq = pack.Add(absl::MakeConstSpan(placement.seq));
    pos = pack.Add(absl::MakeConstSpan(placement.pos));
    tables = pack.Add(batch.block_tables);
    num_groups = pack.Add(absl::MakeConstSpan(groups.num_groups));
    score = pack.Add(absl::MakeConstSpan(groups.score_head));
    k_head = pack.Add(absl::MakeConstSpan(groups.k_head));
    start = pack.Add(absl::MakeConstSpan(groups.member_start));
    out_head = pack.Add(absl::MakeConstSpan(groups.member_out_head));
    v_head = pack.Add(absl::MakeConstSpan(groups.member_v_head));
  }
  if (!split.all_decode) {
    decode_rows = pack.Add(absl::MakeConstSpan(split.decode_rows));
    tile_first = pack.Add(absl::MakeConstSpan(split.tile_first_row));
    tile_rows = pack.Add(absl::MakeConstSpan(split.tile_num_rows));
  }
  const char* args = pack.size() > 0 ? Upload(pack) : nullptr;
  if (!staged) {
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
  if (split.all_decode) {
    params.num_decode_rows = out.rows;  // decode_rows stays null: row i is decode row i
  } else {
    params.decode_rows = PackedAt<int32_t>(args, decode_rows);
    params.num_decode_rows = static_cast<int64_t>(split.decode_rows.size());
    params.tile_first_row = PackedAt<int32_t>(args, tile_first);
    params.tile_num_rows = PackedAt<int32_t>(args, tile_rows);
    params.num_tiles = static_cast<int64_t>(split.tile_first_row.size());
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
  // A bound from the tables' width, not the batch's context lengths (CUDA graphs replay it).
  const int64_t max_positions = int64_t{batch.max_blocks_per_seq} * v_layer.block_size;
  params.num_partitions =
      static_cast<int32_t>((max_positions + kAttentionPartition - 1) / kAttentionPartition);
  CHECK_LE(groups.max_context, max_positions) << "FoldedPagedAttention: block tables too narrow";
  const bool keep_scores = ScoreWorkspaceBytes(params) <= MaxScoreWorkspaceBytes();
  // Step graphs read the workspace they were captured with: it cannot grow during a capture, and
  // growing drops them.
  void* workspace =
      ReserveScratch(attention_workspace_, AttentionWorkspaceBytes(params, keep_scores));
  AssignAttentionWorkspace(workspace, keep_scores, params);
  LaunchPagedAttention(params, stream_);
}

}  // namespace kvfold::cuda
