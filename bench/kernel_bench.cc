// CPU kernel speed. MatMul per weight dtype, batch size and SIMD path, one thread: GFLOP/s
// (2·n·k·m per call) and weight GB/s; shapes: a SmolLM2-135M projection (k=576, m=1536) and a
// 7B-like one (k=4096, m=4096). BM_DecodeProjections: a whole decode step's projections, 1 and 2
// threads. FoldedAttention: decode rows over a paged cache per attention-plan mode, one thread.
// Run: build/bench/kvfold_kernel_bench. Results: bench/RESULTS.md.
#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/numerics.h"

namespace kvfold {
namespace {

constexpr DType kDtypes[] = {DType::kF32,  DType::kBF16, DType::kQ8_0,
                             DType::kQ4_0, DType::kQ4_1, DType::kF16};
constexpr cpu::Isa kIsas[] = {cpu::Isa::kGeneric, cpu::Isa::kAvx2, cpu::Isa::kAvx512};

// Random bytes make valid weights of every dtype once the scales are sane: set each block's F16
// scale (and Q4_1 min) to a small number, and float weights to small values.
std::vector<uint8_t> RandomWeights(DType dtype, int64_t m, int64_t k) {
  std::vector<uint8_t> bytes(static_cast<size_t>(m) * RowBytes(dtype, k));
  std::mt19937 rng(1);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  const uint16_t small_f16 = 0x2000;  // 2^-7
  if (IsQuantized(dtype)) {
    for (size_t off = 0; off < bytes.size(); off += BlockBytes(dtype)) {
      std::memcpy(&bytes[off], &small_f16, 2);
      if (dtype == DType::kQ4_1) std::memcpy(&bytes[off + 2], &small_f16, 2);
    }
  } else {
    std::vector<float> w(m * k);
    for (float& f : w) f = static_cast<float>(rng() % 1000) / 1000.0f - 0.5f;
    for (int64_t i = 0; i < m * k; ++i) {
      if (dtype == DType::kF32) std::memcpy(&bytes[4 * i], &w[i], 4);
      const uint16_t h = dtype == DType::kBF16 ? cpu::F32ToBf16(w[i]) : small_f16;
      if (dtype != DType::kF32) std::memcpy(&bytes[2 * i], &h, 2);
    }
  }
  return bytes;
}

// Args: dtype index, n, k, m, isa index.
void BM_MatMul(benchmark::State& state) {
  const DType dtype = kDtypes[state.range(0)];
  const int64_t n = state.range(1), k = state.range(2), m = state.range(3);
  const cpu::Isa isa = kIsas[state.range(4)];
  if (!cpu::IsaSupported(isa)) return state.SkipWithError("ISA not supported here");
  state.SetLabel(std::string(DTypeName(dtype)) + "/" + std::string(cpu::IsaName(isa)));
  std::unique_ptr<Ops> ops = NewCpuOps(1, isa);
  std::vector<uint8_t> w = RandomWeights(dtype, m, k);
  std::vector<float> x(n * k, 0.25f), out(n * m);
  const TensorView wv{w.data(), dtype, m, k};
  for (auto _ : state) {
    ops->MatMul({x.data(), DType::kF32, n, k}, wv, nullptr, {out.data(), DType::kF32, n, m});
    benchmark::DoNotOptimize(out.data());
  }
  const double calls = static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] =
      benchmark::Counter(2e-9 * n * k * m * calls, benchmark::Counter::kIsRate);
  state.counters["weight_GB/s"] =
      benchmark::Counter(1e-9 * w.size() * calls, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MatMul)
    ->ArgsProduct({{0, 1, 2, 3, 4}, {1, 16}, {576}, {1536}, {0, 1, 2}})
    ->ArgsProduct({{0, 1, 2, 3, 4}, {1, 16}, {4096}, {4096}, {0, 1, 2}})
    ->ArgNames({"dtype", "n", "k", "m", "isa"})
    ->UseRealTime();

// Decode attention, 9 query heads / 3 KV heads / head_dim 64 (SmolLM2-135M's shape), F32 cache,
// block size 16, `seqs` sequences of one decode row at context `context`. Modes: 0 full (GQA),
// 1 share reading the source layer's cached P (no QKᵀ), 2 share recomputing P from the source
// layer's K, 3 cluster (CHAI, 2 clusters: heads 0-4 and 5-8, scores by heads 0 and 5 against a
// 2-head K cache). Args: mode, seqs, context, isa index.
void BM_FoldedAttention(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  const int seqs = static_cast<int>(state.range(1)), context = static_cast<int>(state.range(2));
  const cpu::Isa isa = kIsas[state.range(3)];
  if (!cpu::IsaSupported(isa)) return state.SkipWithError("ISA not supported here");
  constexpr int kHeads = 9, kKvHeads = 3, kDim = 64, kBlock = 16;
  const char* names[] = {"full", "share_cached_p", "share_recompute", "cluster"};
  state.SetLabel(std::string(names[mode]) + "/" + std::string(cpu::IsaName(isa)));
  std::unique_ptr<Ops> ops = NewCpuOps(1, isa);
  const int blocks_per_seq = (context + kBlock - 1) / kBlock;
  const int64_t slots = int64_t{seqs} * blocks_per_seq * kBlock;
  const int k_heads = mode == 3 ? 2 : kKvHeads;
  Tensor k = ops->Allocate(DType::kF32, slots, k_heads * kDim);
  Tensor v = ops->Allocate(DType::kF32, slots, kKvHeads * kDim);
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < k.view().numel(); ++i) k.f32()[i] = dist(rng);
  for (int64_t i = 0; i < v.view().numel(); ++i) v.f32()[i] = dist(rng);
  const KvCacheLayer layer{k.view(), v.view(), kBlock, k_heads, kKvHeads, kDim};
  std::vector<int32_t> query_start(seqs + 1), context_len(seqs, context);
  std::iota(query_start.begin(), query_start.end(), 0);
  std::vector<int32_t> tables(int64_t{seqs} * blocks_per_seq);
  std::iota(tables.begin(), tables.end(), 0);
  std::shuffle(tables.begin(), tables.end(), rng);
  const AttentionBatch batch{query_start, context_len, tables, blocks_per_seq, {}};
  std::vector<float> q(int64_t{seqs} * kHeads * kDim), out(q.size());
  for (float& x : q) x = dist(rng);
  const TensorView qv{q.data(), DType::kF32, seqs, kHeads * kDim};
  const TensorView ov{out.data(), DType::kF32, seqs, kHeads * kDim};
  std::vector<float> p(int64_t{seqs} * kHeads * context);
  AttentionProbs probs{{p.data(), DType::kF32, int64_t{seqs} * kHeads, context},
                       AttentionProbs::Mode::kWrite};
  if (mode == 1) ops->FoldedPagedAttention(qv, layer, layer, {}, batch, kHeads, 0.125f, ov, &probs);
  probs.mode = AttentionProbs::Mode::kRead;
  const std::vector<int32_t> cluster_score = {0, 0, 0, 0, 0, 5, 5, 5, 5};
  const std::vector<int32_t> cluster_k = {0, 0, 0, 0, 0, 1, 1, 1, 1};
  for (auto _ : state) {
    if (mode == 0 || mode == 2) {  // share recompute = full's work with V from another layer
      ops->FoldedPagedAttention(qv, layer, layer, {}, batch, kHeads, 0.125f, ov);
    } else if (mode == 1) {
      ops->FoldedPagedAttention({}, layer, layer, {}, batch, kHeads, 0.125f, ov, &probs);
    } else {
      ops->FoldedPagedAttention(qv, layer, layer, {cluster_score, cluster_k, {}}, batch, kHeads,
                                0.125f, ov);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["rows/s"] = benchmark::Counter(static_cast<double>(seqs) * state.iterations(),
                                                benchmark::Counter::kIsRate);
}
BENCHMARK(BM_FoldedAttention)
    ->ArgsProduct({{0, 1, 3}, {4}, {1024}, {0, 1, 2}})
    ->ArgNames({"mode", "seqs", "context", "isa"})
    ->UseRealTime();

// One decode step's projections of a SmolLM2-135M-shaped model (30 layers: q, k, v, o 576 -> 576,
// 192, 192, 576; gate, up 576 -> 1536; down 1536 -> 576), one token, Q4_1, each layer's weights
// distinct (66 MB: from memory, as in decode), best ISA. Args: threads. Shows the thread pool's
// per-loop cost (210 loops per step) against the kernels' time.
void BM_DecodeProjections(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  std::unique_ptr<Ops> ops = NewCpuOps(threads, cpu::BestIsa());
  struct Shape {
    int64_t k, m;
  };
  const Shape shapes[] = {{576, 576},  {576, 192},  {576, 192}, {576, 576},
                          {576, 1536}, {576, 1536}, {1536, 576}};
  constexpr int kLayers = 30;
  std::vector<std::vector<uint8_t>> weights;
  for (int l = 0; l < kLayers; ++l) {
    for (const Shape& s : shapes) weights.push_back(RandomWeights(DType::kQ4_1, s.m, s.k));
  }
  std::vector<float> x(1536, 0.25f), out(1536);
  for (auto _ : state) {
    for (int l = 0; l < kLayers; ++l) {
      for (int p = 0; p < 7; ++p) {
        const Shape& s = shapes[p];
        ops->MatMul({x.data(), DType::kF32, 1, s.k},
                    {weights[l * 7 + p].data(), DType::kQ4_1, s.m, s.k}, nullptr,
                    {out.data(), DType::kF32, 1, s.m});
      }
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["steps/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeProjections)->Arg(1)->Arg(2)->ArgName("threads")->UseRealTime();

}  // namespace
}  // namespace kvfold

BENCHMARK_MAIN();
