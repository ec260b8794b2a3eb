#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "glog/logging.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/vec_math.h"

namespace kvfold::cpu {

QueryRow LocateQueryRow(const AttentionBatch& batch, int64_t row) {
  // query_start is sorted: the sequence is the last start <= row.
  auto it = std::upper_bound(batch.query_start.begin(), batch.query_start.end(), row);
  const int32_t seq = static_cast<int32_t>(it - batch.query_start.begin()) - 1;
  const int32_t q_len = batch.query_start[seq + 1] - batch.query_start[seq];
  const int32_t j = static_cast<int32_t>(row) - batch.query_start[seq];
  return {seq, batch.context_len[seq] - q_len + j};
}

std::vector<int64_t> AttentionTasks(const AttentionBatch& batch,
                                    const AttentionHeadGroups& groups) {
  std::vector<int64_t> tasks;
  const int64_t h = groups.num_heads;
  for (int32_t s = 0; s < batch.num_seqs(); ++s) {
    const int32_t num_groups = groups.num_groups[groups.MapRow(s)];
    for (int64_t row = batch.query_start[s]; row < batch.query_start[s + 1]; ++row) {
      for (int32_t g = 0; g < num_groups; ++g) tasks.push_back(row * h + g);
    }
  }
  return tasks;
}

namespace {

// o[j] += p * v[j]: one rounding per operation, vectorised across j (no reassociation).
template <typename Load>
__attribute__((always_inline)) inline void AddScaled(float* __restrict o, float p,
                                                     const void* __restrict v, int d, Load load) {
  for (int j = 0; j < d; ++j) o[j] += p * load(v, j);
}

// p[t] = DotVec(q, k_t, kDim) * scale for the n context positions (the same bits as DotVec), with
// q held in registers across positions; returns the largest score.
template <int kDim, int W, typename Load>
__attribute__((always_inline)) inline float ScoreRow(const float* q, int32_t n,
                                                     const int32_t* blocks, int32_t bs,
                                                     const char* k_cache, int64_t k_stride,
                                                     size_t elem, int64_t k_offset, float scale,
                                                     Load load, float* p) {
  constexpr int kParts = kDim / W, kLaneParts = 16 / W;
  FloatVec<W> qv[kParts];
  for (int c = 0; c < kParts; ++c) qv[c] = LoadVec<W>(LoadF32(), q, c * W);
  float max_score = -std::numeric_limits<float>::infinity();
  for (int32_t t0 = 0, b = 0; t0 < n; t0 += bs, ++b) {
    const int64_t base = static_cast<int64_t>(blocks[b]) * bs * k_stride + k_offset;
    for (int32_t t = 0, count = std::min(bs, n - t0); t < count; ++t) {
      const void* k = k_cache + (base + t * k_stride) * elem;
      FloatVec<W> acc[kLaneParts] = {};
      for (int c = 0; c < kParts; ++c) acc[c % kLaneParts] += qv[c] * LoadVec<W>(load, k, c * W);
      const float score = ReduceLanes<W>(acc) * scale;
      p[t0 + t] = score;
      max_score = std::max(max_score, score);
    }
  }
  return max_score;
}

// o[j] = Σ_t p[t] * v_t[j] over the n context positions (t ascending, from 0), for head_dim
// kDim with the sums in registers. `v_offset` is the head's element offset in a cache row.
template <int kDim, int W, typename Load>
__attribute__((always_inline)) inline void MixValues(const float* p, int32_t n,
                                                     const int32_t* blocks, int32_t bs,
                                                     const char* v_cache, int64_t v_stride,
                                                     size_t elem, int64_t v_offset, Load load,
                                                     float* o) {
  constexpr int kParts = kDim / W;
  FloatVec<W> acc[kParts] = {};
  for (int32_t t0 = 0, b = 0; t0 < n; t0 += bs, ++b) {
    const int64_t base = static_cast<int64_t>(blocks[b]) * bs * v_stride + v_offset;
    for (int32_t t = 0, count = std::min(bs, n - t0); t < count; ++t) {
      const void* v = v_cache + (base + t * v_stride) * elem;
      const float pt = p[t0 + t];
      for (int c = 0; c < kParts; ++c) acc[c] += pt * LoadVec<W>(load, v, c * W);
    }
  }
  std::memcpy(o, acc, sizeof(acc));
}

// The task body for one cache dtype. Inlined into each ISA's entry point, so that entry's
// instruction set applies; the reduction order is the same whatever the dtype and ISA:
//   s_t = Dot(q, k_t) * scale (numerics.h's fixed 16-lane order), t ascending
//   e_t = exp(s_t - max_t s_t); sum = Σ e_t in t order; P_t = e_t * (1 / sum)
//   out[j] = Σ_t P_t * v_t[j], t ascending, starting from 0
// P is normalised before it meets V, so a P stored by one call and read by another feeds exactly
// the arithmetic a recomputation would.
template <int W, typename Load>
__attribute__((always_inline)) inline void AttendTasksAs(const FoldedAttentionArgs& a,
                                                         int64_t task_begin, int64_t task_end) {
  const Load load;
  const AttentionHeadGroups& groups = *a.groups;
  const AttentionBatch& batch = *a.batch;
  const int64_t num_heads = groups.num_heads;
  const int d = a.v_layer->head_dim;
  const int32_t bs = a.v_layer->block_size;
  const size_t elem = DTypeSize(a.v_layer->v.dtype);
  const char* v_cache = static_cast<const char*>(a.v_layer->v.data);
  const int64_t v_stride = a.v_layer->v.cols;
  const char* k_cache = groups.reads_k ? static_cast<const char*>(a.k_layer->k.data) : nullptr;
  const int64_t k_stride = groups.reads_k ? a.k_layer->k.cols : 0;
  const bool compute = groups.reads_k;
  const bool vector_dot = d % 16 == 0;
  float* stored = a.probs != nullptr ? a.probs->p.f32() : nullptr;
  const int64_t stored_cols = a.probs != nullptr ? a.probs->p.cols : 0;
  thread_local std::vector<float> scratch;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t row = a.tasks[task] / num_heads;
    const int32_t g = static_cast<int32_t>(a.tasks[task] % num_heads);
    const QueryRow where = LocateQueryRow(batch, row);
    const int32_t m = groups.MapRow(where.seq);
    const int64_t entry = static_cast<int64_t>(m) * num_heads + g;
    const int32_t score_head = groups.score_head[entry];
    const int32_t* blocks =
        batch.block_tables.data() + static_cast<int64_t>(where.seq) * batch.max_blocks_per_seq;
    const int32_t n = where.position + 1;

    float* p;
    if (stored != nullptr) {
      p = stored + (row * groups.num_score_heads + score_head) * stored_cols;
    } else {
      scratch.resize(n);
      p = scratch.data();
    }
    if (compute) {
      const float* q_row = a.q.f32() + row * a.q.cols + static_cast<int64_t>(score_head) * d;
      const int64_t k_offset = static_cast<int64_t>(groups.k_head[entry]) * d;
      // Walk the context block by block: token t of block b sits at row blocks[b] * bs + t % bs.
      float max_score = -std::numeric_limits<float>::infinity();
      if (d == 64) {
        max_score = ScoreRow<64, W>(q_row, n, blocks, bs, k_cache, k_stride, elem, k_offset,
                                    a.scale, load, p);
      } else if (d == 128) {
        max_score = ScoreRow<128, W>(q_row, n, blocks, bs, k_cache, k_stride, elem, k_offset,
                                     a.scale, load, p);
      } else {
        for (int32_t t0 = 0, b = 0; t0 < n; t0 += bs, ++b) {
          const int64_t base = static_cast<int64_t>(blocks[b]) * bs * k_stride + k_offset;
          for (int32_t i = 0, count = std::min(bs, n - t0); i < count; ++i) {
            const void* k = k_cache + (base + i * k_stride) * elem;
            p[t0 + i] =
                (vector_dot ? DotVec<W>(q_row, k, d, load) : Dot(q_row, k, d, load)) * a.scale;
            max_score = std::max(max_score, p[t0 + i]);
          }
        }
      }
      ExpShifted<W>(p, n, max_score);
      const float inv = 1.0f / SumVec<W>(p, n);
      for (int32_t t = 0; t < n; ++t) p[t] *= inv;
    }

    // One P, many V: every member of the group mixes its own V head with the same P.
    const int64_t member_base = static_cast<int64_t>(m) * (num_heads + 1) + g;
    const int32_t first = groups.member_start[member_base];
    const int32_t last = groups.member_start[member_base + 1];
    const int64_t members = static_cast<int64_t>(m) * num_heads;
    if (d == 16 || d == 32 || d == 64 || d == 128) {
      for (int32_t i = first; i < last; ++i) {
        float* o = a.out.f32() + row * a.out.cols +
                   static_cast<int64_t>(groups.member_out_head[members + i]) * d;
        const int64_t v_offset = static_cast<int64_t>(groups.member_v_head[members + i]) * d;
        switch (d) {
          case 16:
            MixValues<16, W>(p, n, blocks, bs, v_cache, v_stride, elem, v_offset, load, o);
            break;
          case 32:
            MixValues<32, W>(p, n, blocks, bs, v_cache, v_stride, elem, v_offset, load, o);
            break;
          case 64:
            MixValues<64, W>(p, n, blocks, bs, v_cache, v_stride, elem, v_offset, load, o);
            break;
          default:
            MixValues<128, W>(p, n, blocks, bs, v_cache, v_stride, elem, v_offset, load, o);
            break;
        }
      }
      continue;
    }
    // Other head dims: the same sums, accumulated in the output row.
    for (int32_t i = first; i < last; ++i) {
      float* o = a.out.f32() + row * a.out.cols +
                 static_cast<int64_t>(groups.member_out_head[members + i]) * d;
      std::fill(o, o + d, 0.0f);
    }
    for (int32_t t0 = 0, b = 0; t0 < n; t0 += bs, ++b) {
      const int64_t base = static_cast<int64_t>(blocks[b]) * bs * v_stride;
      for (int32_t t = 0, count = std::min(bs, n - t0); t < count; ++t) {
        const float pt = p[t0 + t];
        const char* v_row = v_cache + (base + t * v_stride) * elem;
        for (int32_t i = first; i < last; ++i) {
          float* o = a.out.f32() + row * a.out.cols +
                     static_cast<int64_t>(groups.member_out_head[members + i]) * d;
          const void* v =
              v_row + static_cast<int64_t>(groups.member_v_head[members + i]) * d * elem;
          AddScaled(o, pt, v, d, load);
        }
      }
    }
  }
}

template <int W>
__attribute__((always_inline)) inline void AttendTasksAnyDtype(const FoldedAttentionArgs& a,
                                                               int64_t begin, int64_t end) {
  if (a.v_layer->v.dtype == DType::kBF16) {
    AttendTasksAs<W, LoadBf16>(a, begin, end);
  } else {
    AttendTasksAs<W, LoadF32>(a, begin, end);
  }
}

// One entry point per ISA. Without -ffp-contract=fast no path fuses multiply-adds, so every path
// gives the same bits; flatten pulls the helpers into the entry point's instruction set.
__attribute__((flatten)) void AttendTasksGeneric(const FoldedAttentionArgs& a, int64_t begin,
                                                 int64_t end) {
  AttendTasksAnyDtype<4>(a, begin, end);
}
__attribute__((target("avx2,f16c"), flatten)) void AttendTasksAvx2(const FoldedAttentionArgs& a,
                                                                   int64_t begin, int64_t end) {
  AttendTasksAnyDtype<8>(a, begin, end);
}
__attribute__((target("avx512f,avx512bw,avx512vl"), flatten)) void AttendTasksAvx512(
    const FoldedAttentionArgs& a, int64_t begin, int64_t end) {
  AttendTasksAnyDtype<16>(a, begin, end);
}

}  // namespace

AttendTasksFn AttendTasksFor(Isa isa) {
  CHECK(IsaSupported(isa)) << "ISA " << IsaName(isa) << " not supported by this CPU";
  switch (isa) {
    case Isa::kGeneric:
      return &AttendTasksGeneric;
    case Isa::kAvx2:
      return &AttendTasksAvx2;
    case Isa::kAvx512:
      return &AttendTasksAvx512;
  }
  return &AttendTasksGeneric;
}

}  // namespace kvfold::cpu
