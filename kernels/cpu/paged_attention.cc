#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "glog/logging.h"
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

// The vector helpers below are always inlined into one ISA entry point, so the ABI of passing
// wide vectors by value (which -Wpsabi warns about) never applies.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace {

// W F32 lanes as a GCC vector, W the native width of the ISA path (4 generic, 8 AVX2, 16
// AVX-512). Every path computes the same per-lane operations on the same elements, so the vector
// width changes speed only.
template <int W>
struct Vec;
#define KVFOLD_VEC_TYPES(w)                                   \
  template <>                                                 \
  struct Vec<w> {                                             \
    typedef float F32 __attribute__((vector_size(w * 4)));    \
    typedef uint16_t U16 __attribute__((vector_size(w * 2))); \
    typedef uint32_t U32 __attribute__((vector_size(w * 4))); \
    typedef int32_t I32 __attribute__((vector_size(w * 4)));  \
  };
KVFOLD_VEC_TYPES(2)
KVFOLD_VEC_TYPES(4)
KVFOLD_VEC_TYPES(8)
KVFOLD_VEC_TYPES(16)
#undef KVFOLD_VEC_TYPES
template <int W>
using FloatVec = typename Vec<W>::F32;
template <int W>
using U16Vec = typename Vec<W>::U16;
template <int W>
using U32Vec = typename Vec<W>::U32;
template <int W>
using I32Vec = typename Vec<W>::I32;

template <int W>
__attribute__((always_inline)) inline FloatVec<W> LoadVec(LoadF32, const void* p, int64_t i) {
  FloatVec<W> v;
  std::memcpy(&v, static_cast<const float*>(p) + i, sizeof(v));
  return v;
}
template <int W>
__attribute__((always_inline)) inline FloatVec<W> LoadVec(LoadBf16, const void* p, int64_t i) {
  U16Vec<W> h;
  std::memcpy(&h, static_cast<const uint16_t*>(p) + i, sizeof(h));
  const U32Vec<W> bits = __builtin_convertvector(h, U32Vec<W>) << 16;
  FloatVec<W> v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

// The tree of numerics.h's Dot over 16 partial sums held in 16 / W vectors: lane j += lane
// j + width for width 8, 4, 2, 1; returns lane 0.
template <int W>
__attribute__((always_inline)) inline float ReduceLanes(const FloatVec<W>* acc) {
  FloatVec<4> a4;
  if constexpr (W == 16) {
    const FloatVec<8> a8 = __builtin_shufflevector(acc[0], acc[0], 0, 1, 2, 3, 4, 5, 6, 7) +
                           __builtin_shufflevector(acc[0], acc[0], 8, 9, 10, 11, 12, 13, 14, 15);
    a4 = __builtin_shufflevector(a8, a8, 0, 1, 2, 3) + __builtin_shufflevector(a8, a8, 4, 5, 6, 7);
  } else if constexpr (W == 8) {
    const FloatVec<8> a8 = acc[0] + acc[1];
    a4 = __builtin_shufflevector(a8, a8, 0, 1, 2, 3) + __builtin_shufflevector(a8, a8, 4, 5, 6, 7);
  } else {
    static_assert(W == 4);
    a4 = (acc[0] + acc[2]) + (acc[1] + acc[3]);
  }
  const FloatVec<2> a2 =
      __builtin_shufflevector(a4, a4, 0, 1) + __builtin_shufflevector(a4, a4, 2, 3);
  return a2[0] + a2[1];
}

// numerics.h's Dot, bit for bit, for n a positive multiple of 16: 16 interleaved partial sums
// (lane j sums elements i ≡ j mod 16) held in 16 / W vectors, then the tree lane j += lane
// j + width for width 8, 4, 2, 1.
template <int W, typename Load>
__attribute__((always_inline)) inline float DotVec(const float* x, const void* w, int64_t n,
                                                   Load load) {
  constexpr int kParts = 16 / W;
  FloatVec<W> acc[kParts] = {};
  for (int64_t i = 0; i < n; i += 16) {
    for (int c = 0; c < kParts; ++c) {
      acc[c] += LoadVec<W>(LoadF32(), x, i + c * W) * LoadVec<W>(load, w, i + c * W);
    }
  }
  return ReduceLanes<W>(acc);
}

// o[j] += p * v[j]: one rounding per operation, vectorised across j (no reassociation).
template <typename Load>
__attribute__((always_inline)) inline void AddScaled(float* __restrict o, float p,
                                                     const void* __restrict v, int d, Load load) {
  for (int j = 0; j < d; ++j) o[j] += p * load(v, j);
}

// exp(x) for x <= 0 (softmax's exp(s - max)) from IEEE multiplies and adds only (Cephes' expf
// scheme: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial for exp(r), times 2^n; about 1 ulp),
// so that the loop over positions vectorises on every ISA path with the same bits, where a call
// to libm's expf would run one position at a time. Below -87.3 (2^-126) it returns 0.
__attribute__((always_inline)) inline float ExpNonPositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float clamped = x < -87.3f ? -87.3f : x;
  const float n = (clamped * kLog2e + kRound) - kRound;
  const float r = (clamped - n * kLn2Hi) - n * kLn2Lo;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.3f ? 0.0f : y * scale;
}

// ExpNonPositive on W lanes at once, the same operations lane by lane (so the same bits).
template <int W>
__attribute__((always_inline)) inline FloatVec<W> ExpNonPositiveVec(FloatVec<W> x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;
  const FloatVec<W> low = x - x - 87.3f;  // every lane -87.3
  const I32Vec<W> below = x < low;
  const FloatVec<W> clamped = below ? low : x;
  const FloatVec<W> n = (clamped * kLog2e + kRound) - kRound;
  const FloatVec<W> r = (clamped - n * kLn2Hi) - n * kLn2Lo;
  FloatVec<W> y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const I32Vec<W> bits = (__builtin_convertvector(n, I32Vec<W>) + 127) << 23;
  FloatVec<W> scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const FloatVec<W> zero = {};
  return below ? zero : y * scale;
}

// p[t] = ExpNonPositive(p[t] - shift) over [0, n).
template <int W>
__attribute__((always_inline)) inline void ExpShifted(float* p, int32_t n, float shift) {
  int32_t t = 0;
  for (; t + W <= n; t += W) {
    const FloatVec<W> e = ExpNonPositiveVec<W>(LoadVec<W>(LoadF32(), p, t) - shift);
    std::memcpy(p + t, &e, sizeof(e));
  }
  for (; t < n; ++t) p[t] = ExpNonPositive(p[t] - shift);
}

// Σ p[t] over [0, n) in numerics.h's Dot order (16 interleaved partial sums, the pairwise tree,
// then the tail in sequence), with the partial sums in vector registers.
template <int W>
__attribute__((always_inline)) inline float SumVec(const float* p, int64_t n) {
  constexpr int kParts = 16 / W;
  FloatVec<W> acc[kParts] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int c = 0; c < kParts; ++c) acc[c] += LoadVec<W>(LoadF32(), p, i + c * W);
  }
  float sum = ReduceLanes<W>(acc);
  for (; i < n; ++i) sum += p[i];
  return sum;
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
