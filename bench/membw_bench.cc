// Sustained memory bandwidth, the denominator of the decode roofline (bench/decode_bytes.h).
// Each thread streams its own buffer, far larger than the L3 (32 MiB on dev-2c), so every pass
// comes from DRAM. Read: 32-byte loads summed into 4 accumulators (what a memory-bound matmul
// does with its weights). Copy: memcpy between two such buffers (bytes = read + written).
//   build/bench/kvfold_membw_bench [--benchmark_repetitions=5]
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "benchmark/benchmark.h"

namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<char, FreeDeleter>;

Buffer AllocateTouched(size_t bytes) {
  Buffer b(static_cast<char*>(std::aligned_alloc(64, bytes)));
  std::memset(b.get(), 1, bytes);  // fault every page in before timing
  return b;
}

__attribute__((target("avx2"))) uint64_t SumAvx2(const char* p, size_t bytes) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < bytes; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

// range(0): MiB per thread.
void BM_Read(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0)) << 20;
  Buffer buf = AllocateTouched(bytes);
  for (auto _ : state) benchmark::DoNotOptimize(SumAvx2(buf.get(), bytes));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_Read)->Arg(256)->ArgName("MiB")->Threads(1)->Threads(2)->UseRealTime();

void BM_Copy(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0)) << 20;
  Buffer src = AllocateTouched(bytes), dst = AllocateTouched(bytes);
  for (auto _ : state) {
    std::memcpy(dst.get(), src.get(), bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 2 * bytes));
}
BENCHMARK(BM_Copy)->Arg(256)->ArgName("MiB")->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
