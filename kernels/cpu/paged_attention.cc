#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/numerics.h"

namespace kvfold::cpu {

QueryRow LocateQueryRow(const AttentionBatch& batch, int64_t row) {
  // query_start is sorted: the sequence is the last start <= row.
  auto it = std::upper_bound(batch.query_start.begin(), batch.query_start.end(), row);
  const int32_t seq = static_cast<int32_t>(it - batch.query_start.begin()) - 1;
  const int32_t q_len = batch.query_start[seq + 1] - batch.query_start[seq];
  const int32_t j = static_cast<int32_t>(row) - batch.query_start[seq];
  return {seq, batch.context_len[seq] - q_len + j};
}

namespace {

// The body of AttendTasks for one cache dtype. Inlined into each ISA clone of AttendTasks, so the
// clone's instruction set applies; the reduction order is the same whatever the dtype.
template <typename Load>
__attribute__((always_inline)) inline void AttendTasksAs(const TensorView& q,
                                                         const KvCacheLayer& cache,
                                                         const AttentionBatch& batch, int num_heads,
                                                         float scale, int64_t task_begin,
                                                         int64_t task_end, TensorView out) {
  const Load load;
  const int d = cache.head_dim;
  const int group = num_heads / cache.num_k_heads;
  const int64_t kv_stride = static_cast<int64_t>(cache.num_k_heads) * d;
  const size_t elem = DTypeSize(cache.k.dtype);
  const char* k_cache = static_cast<const char*>(cache.k.data);
  const char* v_cache = static_cast<const char*>(cache.v.data);
  const int32_t bs = cache.block_size;
  thread_local std::vector<float> scores;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t row = task / num_heads;
    const int head = static_cast<int>(task % num_heads);
    const int64_t head_offset = static_cast<int64_t>(head / group) * d;
    const QueryRow where = LocateQueryRow(batch, row);
    const int32_t* blocks =
        batch.block_tables.data() + static_cast<int64_t>(where.seq) * batch.max_blocks_per_seq;
    const int32_t n = where.position + 1;
    const float* q_row = q.f32() + row * q.cols + static_cast<int64_t>(head) * d;
    scores.resize(n);
    // Walk the context block by block: token t of block b sits at row blocks[b] * bs + t % bs.
    float max_score = -std::numeric_limits<float>::infinity();
    for (int32_t t0 = 0, b = 0; t0 < n; t0 += bs, ++b) {
      const int64_t base = static_cast<int64_t>(blocks[b]) * bs * kv_stride + head_offset;
      for (int32_t i = 0, count = std::min(bs, n - t0); i < count; ++i) {
        const void* k = k_cache + (base + i * kv_stride) * elem;
        scores[t0 + i] = Dot(q_row, k, d, load) * scale;
        max_score = std::max(max_score, scores[t0 + i]);
      }
    }
    float denom = 0.0f;
    for (int32_t t = 0; t < n; ++t) {
      scores[t] = std::exp(scores[t] - max_score);
      denom += scores[t];
    }
    float* o = out.f32() + row * out.cols + static_cast<int64_t>(head) * d;
    std::fill(o, o + d, 0.0f);
    for (int32_t t0 = 0, b = 0; t0 < n; t0 += bs, ++b) {
      const int64_t base = static_cast<int64_t>(blocks[b]) * bs * kv_stride + head_offset;
      for (int32_t i = 0, count = std::min(bs, n - t0); i < count; ++i) {
        const float p = scores[t0 + i];
        const void* vr = v_cache + (base + i * kv_stride) * elem;
        for (int j = 0; j < d; ++j) o[j] += p * load(vr, j);
      }
    }
    const float inv = 1.0f / denom;
    for (int i = 0; i < d; ++i) o[i] *= inv;
  }
}

}  // namespace

KVFOLD_ISA_CLONES void AttendTasks(const TensorView& q, const KvCacheLayer& cache,
                                   const AttentionBatch& batch, int num_heads, float scale,
                                   int64_t task_begin, int64_t task_end, TensorView out) {
  if (cache.k.dtype == DType::kBF16) {
    AttendTasksAs<LoadBf16>(q, cache, batch, num_heads, scale, task_begin, task_end, out);
  } else {
    AttendTasksAs<LoadF32>(q, cache, batch, num_heads, scale, task_begin, task_end, out);
  }
}

}  // namespace kvfold::cpu
