// Paged-attention kernel speed on a GPU (issue 10): the split-K decode kernels and the tiled
// prefill kernel alone, on one Llama-3-8B-shaped layer (32 query heads, 8 KV heads, head_dim 128,
// BF16 KV cache, 16-token blocks, blocks of each sequence scattered over the pool).
//
// Rows: decode at batch 1, 8 and 64 with every sequence at context 1k, 8k and 32k; prefill of a
// 512-row chunk over a cached prefix of 0 and 2k positions. Each prints the time per call and the
// achieved bandwidth counting the KV bytes the call must read once (every position of every
// sequence's context, K and V, all KV heads): a decode kernel near the HBM roofline shows
// ~2.5-3 TB/s on an H100; prefill is compute-bound, so its GB/s only places it.
//
//   kvfold_gpu_attention_bench [--min_seconds=0.3]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"

namespace kvfold {
namespace {

constexpr int kHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int32_t kBlockSize = 16;

struct Case {
  std::string name;
  int batch;
  int32_t q_len;
  int32_t context;  // per sequence, including this step's rows
};

// Seconds per call of `call`, after warm-up, over at least `min_seconds`.
template <typename F>
double TimeCalls(Ops& ops, const TensorView& sync_view, double min_seconds, F call) {
  float sink = 0.0f;
  for (int i = 0; i < 3; ++i) call();
  ops.CopyToHost(sync_view, &sink);  // the only call that waits for the stream
  int iterations = 0;
  const auto begin = std::chrono::steady_clock::now();
  double elapsed = 0.0;
  do {
    for (int i = 0; i < 10; ++i) call();
    iterations += 10;
    ops.CopyToHost(sync_view, &sink);
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  } while (elapsed < min_seconds);
  return elapsed / iterations;
}

void RunCase(Ops& ops, const Case& c, double min_seconds) {
  const int32_t blocks_per_seq = (c.context + kBlockSize - 1) / kBlockSize;
  const int32_t num_blocks = blocks_per_seq * c.batch;
  const int64_t kv_width = int64_t{kKvHeads} * kHeadDim;
  const Tensor k = ops.Allocate(DType::kBF16, int64_t{num_blocks} * kBlockSize, kv_width);
  const Tensor v = ops.Allocate(DType::kBF16, int64_t{num_blocks} * kBlockSize, kv_width);
  const KvCacheLayer cache{k.view(), v.view(), kBlockSize, kKvHeads, kKvHeads, kHeadDim};

  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(7));
  std::vector<int32_t> query_start = {0}, context_len, tables;
  std::vector<int64_t> slots;
  for (int s = 0; s < c.batch; ++s) {
    const auto table = pool.begin() + int64_t{s} * blocks_per_seq;
    tables.insert(tables.end(), table, table + blocks_per_seq);
    for (int32_t j = 0; j < c.q_len; ++j) {
      const int32_t pos = c.context - c.q_len + j;
      slots.push_back(int64_t{table[pos / kBlockSize]} * kBlockSize + pos % kBlockSize);
    }
    query_start.push_back(query_start.back() + c.q_len);
    context_len.push_back(c.context);
  }
  const AttentionBatch batch{query_start, context_len, tables, blocks_per_seq, slots};
  const int64_t rows = query_start.back();
  const Tensor q = ops.Allocate(DType::kF32, rows, int64_t{kHeads} * kHeadDim);
  const Tensor out = ops.Allocate(DType::kF32, rows, int64_t{kHeads} * kHeadDim);
  const float scale = 1.0f / 11.3137085f;
  // One element: the sync copies 4 bytes.
  const TensorView first{out.view().data, DType::kF32, 1, 1};
  const double seconds = TimeCalls(ops, first, min_seconds, [&] {
    ops.PagedAttention(q.view(), cache, batch, kHeads, scale, out.view());
  });
  const double kv_bytes = 2.0 * c.batch * c.context * kv_width * 2;  // K and V, BF16
  std::printf("%-8s batch=%-3d rows/seq=%-4d context=%-6d %9.3f ms  %8.1f GB/s of KV\n",
              c.name.c_str(), c.batch, c.q_len, c.context, seconds * 1e3, kv_bytes / seconds / 1e9);
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  double min_seconds = 0.3;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg.rfind("--min_seconds=", 0) == 0 &&
        absl::SimpleAtod(arg.substr(sizeof("--min_seconds=") - 1), &min_seconds)) {
      continue;
    }
    std::fprintf(stderr, "usage: kvfold_gpu_attention_bench [--min_seconds=0.3]\n");
    return 2;
  }
  if (!CudaDeviceAvailable()) {
    std::printf("kvfold_gpu_attention_bench: no CUDA device, nothing measured\n");
    return 0;
  }
  absl::StatusOr<std::unique_ptr<Ops>> ops = NewCudaOps(0);
  if (!ops.ok()) {
    std::fprintf(stderr, "kvfold_gpu_attention_bench: %s\n", ops.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "paged attention, %d query heads, %d KV heads, head_dim %d, BF16 cache, blocks of %d\n",
      kHeads, kKvHeads, kHeadDim, kBlockSize);
  for (int batch : {1, 8, 64}) {
    for (int32_t context : {1024, 8192, 32768}) {
      RunCase(**ops, {"decode", batch, 1, context}, min_seconds);
    }
  }
  for (int32_t prefix : {0, 2048}) RunCase(**ops, {"prefill", 1, 512, prefix + 512}, min_seconds);
  return 0;
}

}  // namespace
}  // namespace kvfold

int main(int argc, char** argv) { return kvfold::Main(argc, argv); }
