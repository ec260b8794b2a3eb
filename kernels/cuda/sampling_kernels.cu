// The device sampler's kernels: one block per row, in three passes around two CUB segmented
// sorts. Every float and double operation is written with an explicit rounding intrinsic so nvcc
// cannot contract it into an FMA the CPU sampler does not do.
//
//   prepare:  processed = logits + bias, then the penalties; argmax (greedy rows are done);
//             probs = exp((processed - max) / temperature); top_k sort keys
//   [sort by (logit desc, id asc) for top_k rows]
//   top_k:    zero the probabilities past the k-th; top_p sort keys (probability bits)
//   [stable sort by (prob desc, id asc) for top_p rows]
//   finish:   top_p cut, min_p, normalize, draw in token-id order
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_sort.cuh>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/sampling_kernels.h"

namespace kvfold::cuda {
namespace {

constexpr int kThreads = 512;

// worker/sampler.cc's CounterUniform: SplitMix64 over (seed, counter), 24 random bits.
__device__ float CounterUniform(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + counter + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return __fmul_rn(__ull2float_rn(z >> 40), 0x1.0p-24f);
}

struct ArgMaxPair {
  float value;
  int32_t id;
};
// The higher value; the lower id among equals (std::max_element's first maximum).
struct ArgMaxOp {
  __device__ ArgMaxPair operator()(const ArgMaxPair& a, const ArgMaxPair& b) const {
    if (a.value > b.value || (a.value == b.value && a.id < b.id)) return a;
    return b;
  }
};
struct MinOp {
  __device__ int64_t operator()(int64_t a, int64_t b) const { return a < b ? a : b; }
};
struct MaxOp {
  __device__ int64_t operator()(int64_t a, int64_t b) const { return a > b ? a : b; }
};
struct MaxDoubleOp {
  __device__ double operator()(double a, double b) const { return a > b ? a : b; }
};
struct SumOp {
  __device__ double operator()(double a, double b) const { return __dadd_rn(a, b); }
};

using ArgMaxReduce = cub::BlockReduce<ArgMaxPair, kThreads>;
using IndexReduce = cub::BlockReduce<int64_t, kThreads>;
using DoubleReduce = cub::BlockReduce<double, kThreads>;
using DoubleScan = cub::BlockScan<double, kThreads>;

struct Shared {
  union {
    typename ArgMaxReduce::TempStorage argmax;
    typename IndexReduce::TempStorage index;
    typename DoubleReduce::TempStorage reduce;
    typename DoubleScan::TempStorage scan;
  } temp;
  ArgMaxPair argmax;
  int64_t index;
  double value;
};

// Each thread's contiguous chunk of the row, so per-thread sums run in index order.
struct Chunk {
  int64_t begin, end;
};
__device__ Chunk ThreadChunk(int64_t vocab) {
  const int64_t per_thread = (vocab + kThreads - 1) / kThreads;
  const int64_t begin = min(vocab, per_thread * threadIdx.x);
  return {begin, min(vocab, begin + per_thread)};
}

// Block-wide results, returned to every thread. Each contains __syncthreads(): call from all.
__device__ ArgMaxPair BlockArgMax(ArgMaxPair v, Shared& s) {
  const ArgMaxPair r = ArgMaxReduce(s.temp.argmax).Reduce(v, ArgMaxOp());
  if (threadIdx.x == 0) s.argmax = r;
  __syncthreads();
  const ArgMaxPair all = s.argmax;
  __syncthreads();
  return all;
}
template <typename Op>
__device__ int64_t BlockIndex(int64_t v, Op op, Shared& s) {
  const int64_t r = IndexReduce(s.temp.index).Reduce(v, op);
  if (threadIdx.x == 0) s.index = r;
  __syncthreads();
  const int64_t all = s.index;
  __syncthreads();
  return all;
}
template <typename Op>
__device__ double BlockDouble(double v, Op op, Shared& s) {
  const double r = DoubleReduce(s.temp.reduce).Reduce(v, op);
  if (threadIdx.x == 0) s.value = r;
  __syncthreads();
  const double all = s.value;
  __syncthreads();
  return all;
}
// Sum of values[0, vocab): sequential per thread chunk, then the block's fixed tree.
__device__ double BlockRowSum(const double* values, int64_t vocab, Shared& s) {
  const Chunk c = ThreadChunk(vocab);
  double sum = 0.0;
  for (int64_t i = c.begin; i < c.end; ++i) sum = __dadd_rn(sum, values[i]);
  return BlockDouble(sum, SumOp(), s);
}
// The sum of the chunks before this thread's (an exclusive block scan of chunk sums).
__device__ double ChunkPrefix(double chunk_sum, Shared& s) {
  double prefix = 0.0;
  DoubleScan(s.temp.scan).ExclusiveScan(chunk_sum, prefix, 0.0, SumOp());
  __syncthreads();
  return prefix;
}

// Float keys ordered as unsigned integers (-0 counted as +0, as the CPU's comparisons do).
__device__ uint32_t OrderedFloat(float x) {
  const uint32_t bits = __float_as_uint(__fadd_rn(x, 0.0f));
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__global__ void __launch_bounds__(kThreads) PrepareKernel(SamplingLaunch a) {
  __shared__ Shared s;
  const int32_t row = blockIdx.x;
  const DeviceSamplingRow p = a.rows[row];
  const int64_t vocab = a.vocab;
  const float* in = a.logits + static_cast<int64_t>(p.logits_row) * vocab;
  float* x = a.processed + static_cast<int64_t>(row) * vocab;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) x[i] = in[i];
  __syncthreads();
  if (threadIdx.x == 0) {  // in list order: a token listed twice gets both additions, in order
    for (int32_t b = a.bias_offsets[row]; b < a.bias_offsets[row + 1]; ++b) {
      const int32_t t = a.bias_tokens[b];
      if (t >= 0 && t < vocab) x[t] = __fadd_rn(x[t], a.bias_values[b]);
    }
  }
  __syncthreads();
  const bool repetition = p.repetition_penalty != 1.0f;
  const bool frequency = p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
  for (int32_t h = a.history_offsets[row] + threadIdx.x; h < a.history_offsets[row + 1];
       h += kThreads) {
    const int32_t t = a.history_tokens[h];
    if (t < 0 || t >= vocab) continue;
    float l = x[t];
    if (repetition) {
      l = l > 0 ? __fdiv_rn(l, p.repetition_penalty) : __fmul_rn(l, p.repetition_penalty);
    }
    const int32_t count = a.output_counts[h];
    if (frequency && count > 0) {
      l = __fsub_rn(l, __fadd_rn(__fmul_rn(p.frequency_penalty, static_cast<float>(count)),
                                 p.presence_penalty));
    }
    x[t] = l;
  }
  __syncthreads();
  ArgMaxPair best{-INFINITY, 0x7fffffff};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    best = ArgMaxOp()(best, ArgMaxPair{x[i], static_cast<int32_t>(i)});
  }
  best = BlockArgMax(best, s);
  if (p.temperature <= 0.0f) {
    if (threadIdx.x == 0) a.tokens[row] = best.id;
    return;
  }
  const float max_logit = x[best.id];
  const double temperature = p.temperature;
  double* probs = a.probs + static_cast<int64_t>(row) * vocab;
  const bool top_k = TopKActive(p, vocab);
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    probs[i] = exp(__ddiv_rn(static_cast<double>(__fsub_rn(x[i], max_logit)), temperature));
    if (top_k) {
      // Unique keys: (logit desc, id asc) in one descending sort.
      const int64_t at = static_cast<int64_t>(row) * vocab + i;
      a.keys_in[at] = (static_cast<uint64_t>(OrderedFloat(x[i])) << 32) |
                      static_cast<uint32_t>(~static_cast<uint32_t>(i));
      a.ids_in[at] = static_cast<int32_t>(i);
    }
  }
}

__global__ void __launch_bounds__(kThreads) TopKKernel(SamplingLaunch a) {
  const int32_t row = blockIdx.x;
  const DeviceSamplingRow p = a.rows[row];
  if (p.temperature <= 0.0f) return;
  const int64_t vocab = a.vocab;
  const int64_t base = static_cast<int64_t>(row) * vocab;
  double* probs = a.probs + base;
  if (TopKActive(p, vocab)) {
    for (int64_t j = p.top_k + threadIdx.x; j < vocab; j += kThreads) {
      probs[a.ids_out[base + j]] = 0.0;
    }
  }
  __syncthreads();
  if (TopPActive(p)) {
    // Probabilities are >= +0, so their bits sort as they do; the stable sort keeps ids ascending
    // among equal probabilities.
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      a.keys_in[base + i] = static_cast<uint64_t>(__double_as_longlong(probs[i]));
      a.ids_in[base + i] = static_cast<int32_t>(i);
    }
  }
}

__global__ void __launch_bounds__(kThreads) FinishKernel(SamplingLaunch a) {
  __shared__ Shared s;
  const int32_t row = blockIdx.x;
  const DeviceSamplingRow p = a.rows[row];
  if (p.temperature <= 0.0f) return;
  const int64_t vocab = a.vocab;
  const int64_t base = static_cast<int64_t>(row) * vocab;
  double* probs = a.probs + base;
  const Chunk c = ThreadChunk(vocab);
  if (TopPActive(p)) {
    // The smallest prefix, in (prob desc, id asc) order, whose mass reaches top_p * total.
    const double threshold = __dmul_rn(static_cast<double>(p.top_p), BlockRowSum(probs, vocab, s));
    const uint64_t* sorted = a.keys_out + base;
    double chunk_sum = 0.0;
    for (int64_t j = c.begin; j < c.end; ++j) {
      chunk_sum = __dadd_rn(chunk_sum, __longlong_as_double(static_cast<long long>(sorted[j])));
    }
    double mass = ChunkPrefix(chunk_sum, s);
    int64_t first = vocab;
    for (int64_t j = c.begin; j < c.end; ++j) {
      mass = __dadd_rn(mass, __longlong_as_double(static_cast<long long>(sorted[j])));
      if (mass >= threshold) {
        first = j;
        break;
      }
    }
    const int64_t kept = BlockIndex(first, MinOp(), s) + 1;  // vocab + 1: rounding, keep all
    for (int64_t j = kept + threadIdx.x; j < vocab; j += kThreads) probs[a.ids_out[base + j]] = 0.0;
    __syncthreads();
  }
  if (p.min_p > 0.0f) {
    double local_max = 0.0;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) local_max = fmax(local_max, probs[i]);
    const double threshold =
        __dmul_rn(static_cast<double>(p.min_p), BlockDouble(local_max, MaxDoubleOp(), s));
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      if (probs[i] < threshold) probs[i] = 0.0;
    }
    __syncthreads();
  }
  // Normalize, then the first kept token whose cumulative probability passes the uniform.
  const double total = BlockRowSum(probs, vocab, s);
  const double target = CounterUniform(p.seed, p.position);
  double chunk_sum = 0.0;
  for (int64_t i = c.begin; i < c.end; ++i) {
    const double q = __ddiv_rn(probs[i], total);
    if (q > 0.0) chunk_sum = __dadd_rn(chunk_sum, q);
  }
  double cumulative = ChunkPrefix(chunk_sum, s);
  int64_t hit = vocab, last_kept = -1;
  for (int64_t i = c.begin; i < c.end; ++i) {
    const double q = __ddiv_rn(probs[i], total);
    if (!(q > 0.0)) continue;
    cumulative = __dadd_rn(cumulative, q);
    last_kept = i;
    if (target < cumulative) {
      hit = i;
      break;
    }
  }
  hit = BlockIndex(hit, MinOp(), s);
  last_kept = BlockIndex(last_kept, MaxOp(), s);
  if (threadIdx.x == 0) {
    // No hit: rounding left the uniform just above the total, so the last kept token (the CPU's
    // fallback; 0 when nothing is kept).
    a.tokens[row] = static_cast<int32_t>(hit < vocab ? hit : (last_kept >= 0 ? last_kept : 0));
  }
}

cudaError_t SortSegments(const SamplingLaunch& a, const int64_t* end, cudaStream_t stream) {
  size_t bytes = a.sort_temp_bytes;
  return cub::DeviceSegmentedSort::StableSortPairsDescending(
      a.sort_temp, bytes, a.keys_in, a.keys_out, a.ids_in, a.ids_out,
      static_cast<int64_t>(a.num_rows) * a.vocab, static_cast<int64_t>(a.num_rows), a.sort_begin,
      end, stream);
}

}  // namespace

size_t SamplingSortTempBytes(int32_t num_rows, int64_t vocab) {
  size_t bytes = 0;
  const int64_t* offsets = nullptr;
  KVFOLD_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairsDescending(
      nullptr, bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int64_t>(num_rows) * vocab, static_cast<int64_t>(num_rows), offsets, offsets));
  return bytes;
}

void LaunchSampling(const SamplingLaunch& a, cudaStream_t stream) {
  if (a.num_rows == 0) return;
  PrepareKernel<<<a.num_rows, kThreads, 0, stream>>>(a);
  KVFOLD_CUDA_CHECK_LAUNCH();
  if (!a.any_top_k && !a.any_top_p) {
    FinishKernel<<<a.num_rows, kThreads, 0, stream>>>(a);
    KVFOLD_CUDA_CHECK_LAUNCH();
    return;
  }
  if (a.any_top_k) KVFOLD_CUDA_CHECK(SortSegments(a, a.top_k_end, stream));
  TopKKernel<<<a.num_rows, kThreads, 0, stream>>>(a);
  KVFOLD_CUDA_CHECK_LAUNCH();
  if (a.any_top_p) KVFOLD_CUDA_CHECK(SortSegments(a, a.top_p_end, stream));
  FinishKernel<<<a.num_rows, kThreads, 0, stream>>>(a);
  KVFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace kvfold::cuda
