// Launchers of the CUDA backend's kernels. Internal to kernels/cuda: every pointer is a device
// pointer and every shape was checked by the CudaOps method that calls the launcher. Launchers
// enqueue on `stream` and return at once; none launches for empty inputs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/ops.h"

namespace kvfold::cuda {

// out[i] = table[token_ids[i]] as F32; table has `cols` columns of `table_dtype`.
void LaunchEmbedding(const int32_t* token_ids, int64_t num_tokens, const void* table,
                     DType table_dtype, int64_t cols, float* out, cudaStream_t stream);
// Row-wise RMS norm; `out` may alias `x`.
void LaunchRmsNorm(const float* x, const float* weight, float eps, int64_t rows, int64_t cols,
                   float* out, cudaStream_t stream);
// out = silu(gate) * up over `numel` elements; `out` may alias `gate` or `up`.
void LaunchSiluMul(const float* gate, const float* up, int64_t numel, float* out,
                   cudaStream_t stream);
// x += y over `numel` elements.
void LaunchAdd(float* x, const float* y, int64_t numel, cudaStream_t stream);
// out[i] = x[rows[i]] for rows of `row_bytes` bytes (a multiple of 2).
void LaunchGatherRows(const void* x, const int32_t* rows, int64_t num_rows, int64_t row_bytes,
                      void* out, cudaStream_t stream);

// Rotate-half RoPE of x [num_tokens, num_heads * head_dim] in place; `table` is
// [max_positions, head_dim] with cos in the first half of each row and sin in the second.
void LaunchRope(float* x, int64_t num_tokens, int num_heads, int head_dim, const int32_t* positions,
                const float* table, cudaStream_t stream);
// Copies row i of k (k_width floats; skipped when k_cache is null) and v (v_width floats) to row
// slots[i] of k_cache and v_cache, whose elements are `cache_dtype` (F32, or BF16 rounded to
// nearest even). Rows with a negative slot (padding) are skipped.
void LaunchWriteKv(const float* k, int64_t k_width, const float* v, int64_t v_width,
                   const int64_t* slots, int64_t num_rows, DType cache_dtype, void* k_cache,
                   void* v_cache, cudaStream_t stream);
// Rope of q and k and the K/V write of each token in one kernel (Ops::RopeWriteKv): the bits of
// LaunchRope on q, LaunchRope on k and LaunchWriteKv. A layer without K has num_k_heads 0.
struct RopeWriteKvArgs {
  float* q = nullptr;        // [num_tokens, num_q_heads * head_dim], rotated in place
  float* k = nullptr;        // [num_tokens, num_k_heads * head_dim], rotated in place
  const float* v = nullptr;  // [num_tokens, v_width]
  int64_t v_width = 0;
  int64_t num_tokens = 0;
  int num_q_heads = 0;
  int num_k_heads = 0;
  int head_dim = 0;
  const int32_t* positions = nullptr;  // [num_tokens]
  const float* table = nullptr;        // [max_positions, head_dim]: cos, then sin
  const int64_t* slots = nullptr;      // [num_tokens]; negative: the row stores nothing
};
void LaunchRopeWriteKv(const RopeWriteKvArgs& args, DType cache_dtype, void* k_cache, void* v_cache,
                       cudaStream_t stream);

// Everything one folded paged-attention call reads (FoldedPagedAttention in ops.h; the head
// groups are AttentionHeadGroups' arrays, uploaded). Query row r belongs to sequence row_seq[r]
// and sits at position row_pos[r]; it attends to positions [0, row_pos[r]] of that sequence.
// Rows of one-row sequences (decode) go to the split-K kernels, listed in decode_rows; the rows of
// longer chunks (prefill) go to the tiled prefill kernel in tiles of up to kPrefillTileRows rows of
// one sequence. Both follow one arithmetic order (attention_order.cuh), so the split never
// changes a row's bits. Grids come from num_decode_rows, num_tiles and num_partitions (a bound
// from the block tables' width), never from the context lengths, which only the kernels read.
struct PagedAttentionParams {
  const float* q = nullptr;       // [num_rows, num_score_heads * head_dim]; unused when reading P
  float* out = nullptr;           // [num_rows, num_heads * head_dim]
  const void* k_cache = nullptr;  // [slots, k_stride]; unused when reading P
  const void* v_cache = nullptr;  // [slots, v_stride]
  int64_t k_stride = 0;
  int64_t v_stride = 0;
  DType kv_dtype = DType::kF32;           // of k_cache and v_cache: F32 or BF16
  const int32_t* row_seq = nullptr;       // [num_rows]
  const int32_t* row_pos = nullptr;       // [num_rows]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  // Head groups per map row m (map row of sequence s: s when per_seq_maps, else 0).
  const int32_t* num_groups = nullptr;       // [map_rows]
  const int32_t* group_score = nullptr;      // [map_rows, num_heads]
  const int32_t* group_k = nullptr;          // [map_rows, num_heads]
  const int32_t* member_start = nullptr;     // [map_rows, num_heads + 1]
  const int32_t* member_out_head = nullptr;  // [map_rows, num_heads]
  const int32_t* member_v_head = nullptr;    // [map_rows, num_heads]
  bool per_seq_maps = false;
  // Probabilities workspace: [num_rows * num_score_heads, probs_cols]; mode 0 none, 1 write,
  // 2 read.
  float* probs = nullptr;
  int64_t probs_cols = 0;
  int32_t probs_mode = 0;
  int64_t num_rows = 0;
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 0;
  int32_t num_heads = 0;
  int32_t num_score_heads = 0;
  int32_t head_dim = 0;
  float scale = 1.0f;
  // Split-K decode rows and prefill tiles (first row, row count).
  const int32_t* decode_rows = nullptr;  // [num_decode_rows]; null: decode row i is row i
  int64_t num_decode_rows = 0;
  const int32_t* tile_first_row = nullptr;  // [num_tiles]
  const int32_t* tile_num_rows = nullptr;   // [num_tiles]
  int64_t num_tiles = 0;
  // ceil(max_blocks_per_seq * block_size / kAttentionPartition): partitions of the longest
  // context the block tables can hold.
  int32_t num_partitions = 0;
  // Workspace (AttentionWorkspaceBytes, laid out by AssignAttentionWorkspace); decode rows only.
  float* part_scores = nullptr;  // [num_decode_rows, num_heads, num_partitions * partition], or
                                 // null: the values phase recomputes the scores
  float2* part_stats = nullptr;  // [num_decode_rows, num_heads, num_partitions]: (m_p, l_p)
  float* part_out = nullptr;     // [num_decode_rows, num_heads, num_partitions, head_dim]
};
// The largest head_dim the attention kernels support.
inline constexpr int kMaxAttentionHeadDim = 512;
// Positions per softmax partition (attention_order.cuh) and query rows per prefill tile.
inline constexpr int kAttentionPartition = 256;
inline constexpr int kPrefillTileRows = 16;
// Workspace bytes a call with these shapes needs, with or without the decode scores, and the
// pointers into `workspace` (256-byte aligned, at least that many bytes). Keeping the scores saves
// reading K twice; ScoreWorkspaceBytes is their share.
size_t ScoreWorkspaceBytes(const PagedAttentionParams& params);
size_t AttentionWorkspaceBytes(const PagedAttentionParams& params, bool keep_scores);
void AssignAttentionWorkspace(void* workspace, bool keep_scores, PagedAttentionParams& params);
// Score workspaces above this many bytes are not kept (attention_ops.cc; tests lower it to reach
// the recomputing path).
void SetMaxScoreWorkspaceBytes(size_t bytes);
size_t MaxScoreWorkspaceBytes();
// Launches the split-K decode kernels and the prefill kernel for the listed rows.
void LaunchPagedAttention(const PagedAttentionParams& params, cudaStream_t stream);
// The prefill kernel alone (paged_attention.cu calls it for the tiles).
void LaunchPrefillAttention(const PagedAttentionParams& params, cudaStream_t stream);

// MatMul staging: dst [padded_rows, cols] in `dst_dtype` (F32, F16 or BF16) = x [rows, cols]
// rounded to nearest, with rows [rows, padded_rows) set to zero.
void LaunchConvertPadRows(const float* x, int64_t rows, int64_t padded_rows, int64_t cols,
                          DType dst_dtype, void* dst, cudaStream_t stream);
// out [rows, cols] = src (+ bias [cols] when non-null).
void LaunchCopyAddBias(const float* src, const float* bias, int64_t rows, int64_t cols, float* out,
                       cudaStream_t stream);

}  // namespace kvfold::cuda
