// CudaOps::WriteKv and CudaOps::PagedAttention: batch validation on the host, then one upload and
// one launch each.
#include <vector>

#include "kernels/cuda/cuda_ops_impl.h"
#include "kernels/cuda/kernels.h"

namespace kvfold::cuda {
namespace {

void CheckCache(const KvCacheLayer& cache) {
  CHECK(cache.block_size > 0 && cache.num_k_heads > 0 && cache.head_dim > 0)
      << "KV cache: block_size " << cache.block_size << ", num_k_heads " << cache.num_k_heads
      << ", head_dim " << cache.head_dim;
  CHECK_EQ(cache.num_k_heads, cache.num_v_heads)
      << "folded KV layers are not supported on CUDA yet";
  const int64_t width = static_cast<int64_t>(cache.num_k_heads) * cache.head_dim;
  CHECK(cache.k.dtype == DType::kF32 || cache.k.dtype == DType::kBF16)
      << "KV cache dtype " << DTypeName(cache.k.dtype) << " is not F32 or BF16";
  CheckShape(cache.k, cache.k.dtype, cache.k.rows, width, "KV cache k");
  CheckShape(cache.v, cache.k.dtype, cache.k.rows, width, "KV cache v");
  CHECK_EQ(cache.k.rows % cache.block_size, 0) << "KV cache rows must be whole blocks";
}

// Where each query row sits: its sequence and its position. Checks the batch against `num_rows`
// query rows and the cache's block pool.
struct RowPlacement {
  std::vector<int32_t> seq;
  std::vector<int32_t> pos;
};

RowPlacement PlaceRows(const AttentionBatch& batch, int64_t num_rows, const KvCacheLayer& cache) {
  const int32_t num_seqs = batch.num_seqs();
  const int64_t num_blocks = cache.k.rows / cache.block_size;
  CHECK_EQ(batch.query_start.size(), static_cast<size_t>(num_seqs) + 1) << "query_start size";
  CHECK_EQ(batch.query_start.front(), 0) << "query_start[0]";
  CHECK_EQ(batch.query_start.back(), num_rows) << "query_start must end at the query row count";
  CHECK_GE(batch.max_blocks_per_seq, 0);
  CHECK_EQ(batch.block_tables.size(),
           static_cast<size_t>(num_seqs) * static_cast<size_t>(batch.max_blocks_per_seq))
      << "block_tables must be num_seqs x max_blocks_per_seq";
  RowPlacement placement;
  placement.seq.reserve(num_rows);
  placement.pos.reserve(num_rows);
  for (int32_t s = 0; s < num_seqs; ++s) {
    const int32_t q_len = batch.query_start[s + 1] - batch.query_start[s];
    const int32_t context = batch.context_len[s];
    CHECK_GE(q_len, 0) << "query_start must not decrease (sequence " << s << ")";
    CHECK_GE(context, q_len) << "context_len below the query length (sequence " << s << ")";
    const int64_t blocks_used =
        (static_cast<int64_t>(context) + cache.block_size - 1) / cache.block_size;
    CHECK_LE(blocks_used, batch.max_blocks_per_seq)
        << "sequence " << s << " needs more blocks than its table row has";
    for (int64_t b = 0; b < blocks_used; ++b) {
      const int32_t block = batch.block_tables[s * batch.max_blocks_per_seq + b];
      CHECK(block >= 0 && block < num_blocks)
          << "sequence " << s << ": block id " << block << " outside [0, " << num_blocks << ")";
    }
    for (int32_t j = 0; j < q_len; ++j) {
      placement.seq.push_back(s);
      placement.pos.push_back(context - q_len + j);
    }
  }
  return placement;
}

}  // namespace

void CudaOps::WriteKv(const TensorView& k, const TensorView& v, const AttentionBatch& batch,
                      const KvCacheLayer& cache) {
  CheckCache(cache);
  const int64_t width = cache.k.cols;
  const auto num_rows = static_cast<int64_t>(batch.slot_mapping.size());
  CheckShape(k, DType::kF32, num_rows, width, "WriteKv k");
  CheckShape(v, DType::kF32, num_rows, width, "WriteKv v");
  for (const int64_t slot : batch.slot_mapping) {
    CHECK(slot >= 0 && slot < cache.k.rows)
        << "WriteKv: slot " << slot << " outside [0, " << cache.k.rows << ")";
  }
  if (num_rows == 0) return;
  Activate();
  ArgPack pack;
  const size_t slots = pack.Add(batch.slot_mapping);
  const char* args = Upload(pack);
  LaunchWriteKv(k.f32(), v.f32(), PackedAt<int64_t>(args, slots), num_rows, width, cache.k.dtype,
                cache.k.data, cache.v.data, stream_);
}

void CudaOps::PagedAttention(const TensorView& q, const KvCacheLayer& cache,
                             const AttentionBatch& batch, int num_heads, float scale,
                             TensorView out) {
  CheckCache(cache);
  CHECK(num_heads > 0 && num_heads % cache.num_k_heads == 0)
      << "PagedAttention: num_heads " << num_heads << " is not a multiple of num_k_heads "
      << cache.num_k_heads;
  CHECK_LE(cache.head_dim, kMaxAttentionHeadDim) << "PagedAttention: head_dim";
  const int64_t width = static_cast<int64_t>(num_heads) * cache.head_dim;
  CheckShape(q, DType::kF32, q.rows, width, "PagedAttention q");
  CheckShape(out, DType::kF32, q.rows, width, "PagedAttention out");
  const RowPlacement placement = PlaceRows(batch, q.rows, cache);
  if (q.rows == 0) return;
  Activate();
  ArgPack pack;
  const size_t seq = pack.Add(absl::MakeConstSpan(placement.seq));
  const size_t pos = pack.Add(absl::MakeConstSpan(placement.pos));
  const size_t tables = pack.Add(batch.block_tables);
  const char* args = Upload(pack);

  PagedAttentionParams params;
  params.q = q.f32();
  params.out = out.f32();
  params.k_cache = cache.k.data;
  params.v_cache = cache.v.data;
  params.kv_dtype = cache.k.dtype;
  params.row_seq = PackedAt<int32_t>(args, seq);
  params.row_pos = PackedAt<int32_t>(args, pos);
  params.block_tables = PackedAt<int32_t>(args, tables);
  params.num_rows = q.rows;
  params.max_blocks_per_seq = batch.max_blocks_per_seq;
  params.block_size = cache.block_size;
  params.num_heads = num_heads;
  params.num_kv_heads = cache.num_k_heads;
  params.head_dim = cache.head_dim;
  params.scale = scale;
  LaunchPagedAttention(params, stream_);
}

}  // namespace kvfold::cuda
