// WriteKv, PagedAttention and FoldedPagedAttention of the CUDA backend against the CPU reference:
// several sequences of different lengths (decode, prefill, chunked prefill), MHA, GQA and MQA,
// several blocks per sequence with scrambled block ids, contexts longer than the kernel's
// 64-position tile; F32 and BF16 caches (both backends round to nearest even on write, so their
// caches agree bit for bit).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/gpu/backend_pair.h"

namespace kvfold {
namespace {

using testing::BackendPairTest;
using testing::RandomArray;
using testing::TensorPair;

struct SeqSpec {
  int32_t q_len;
  int32_t context_len;
};

// A batch's host-side description: everything AttentionBatch points at.
struct BatchData {
  std::vector<int32_t> query_start;
  std::vector<int32_t> context_len;
  std::vector<int32_t> block_tables;
  std::vector<int64_t> slot_mapping;
  int32_t max_blocks_per_seq = 0;
  int32_t num_blocks = 0;

  AttentionBatch View() const {
    return {query_start, context_len, block_tables, max_blocks_per_seq, slot_mapping};
  }
  int32_t num_rows() const { return query_start.back(); }
};

// Gives the sequences blocks from a shuffled pool with `spare_blocks` left unused, and one spare
// table entry each (pointing at an unused block: a kernel that reads past the context would see
// garbage).
BatchData MakeBatch(const std::vector<SeqSpec>& seqs, int32_t block_size, int32_t spare_blocks,
                    std::mt19937& rng) {
  BatchData b;
  int32_t blocks_needed = 0;
  for (const SeqSpec& s : seqs) {
    const int32_t blocks = (s.context_len + block_size - 1) / block_size;
    blocks_needed += blocks;
    b.max_blocks_per_seq = std::max(b.max_blocks_per_seq, blocks + 1);
  }
  b.num_blocks = blocks_needed + spare_blocks;
  std::vector<int32_t> pool(b.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  const int32_t unused = pool.back();
  size_t next = 0;
  b.query_start.push_back(0);
  for (const SeqSpec& s : seqs) {
    std::vector<int32_t> row(b.max_blocks_per_seq, unused);
    for (int32_t i = 0; i < (s.context_len + block_size - 1) / block_size; ++i)
      row[i] = pool[next++];
    for (int32_t j = 0; j < s.q_len; ++j) {
      const int32_t pos = s.context_len - s.q_len + j;
      b.slot_mapping.push_back(int64_t{row[pos / block_size]} * block_size + pos % block_size);
    }
    b.block_tables.insert(b.block_tables.end(), row.begin(), row.end());
    b.query_start.push_back(b.query_start.back() + s.q_len);
    b.context_len.push_back(s.context_len);
  }
  return b;
}

struct AttentionConfig {
  int num_heads;
  int num_kv_heads;
  int head_dim;
  int32_t block_size;
};

// A tensor's raw bytes on the host, whatever its dtype.
std::vector<uint8_t> RawBytes(Ops& ops, const Tensor& t) {
  std::vector<uint8_t> out(t.view().nbytes());
  ops.CopyToHost(t.view(), out.data());
  return out;
}

class CudaAttentionTest : public BackendPairTest {
 protected:
  // Fills the cache with random K/V (the earlier context), writes this step's K/V for the query
  // rows, runs attention; checks the caches bit for bit and the outputs within a tolerance.
  void RunAndCompare(const AttentionConfig& c, const std::vector<SeqSpec>& seqs, uint32_t seed,
                     DType kv_dtype = DType::kF32) {
    std::mt19937 rng(seed);
    const BatchData batch = MakeBatch(seqs, c.block_size, 3, rng);
    const int64_t width = int64_t{c.num_kv_heads} * c.head_dim;
    const int64_t cache_rows = int64_t{batch.num_blocks} * c.block_size;
    const TensorPair k_cache = Upload(RandomArray(rng, kv_dtype, cache_rows, width));
    const TensorPair v_cache = Upload(RandomArray(rng, kv_dtype, cache_rows, width));
    const int64_t n = batch.num_rows();
    const TensorPair k = Upload(RandomArray(rng, DType::kF32, n, width));
    const TensorPair v = Upload(RandomArray(rng, DType::kF32, n, width));
    const TensorPair q =
        Upload(RandomArray(rng, DType::kF32, n, int64_t{c.num_heads} * c.head_dim));
    const TensorPair out = Zeros(n, int64_t{c.num_heads} * c.head_dim);
    const KvCacheLayer cpu_cache{k_cache.cpu.view(), v_cache.cpu.view(), c.block_size,
                                 c.num_kv_heads,     c.num_kv_heads,     c.head_dim};
    const KvCacheLayer gpu_cache{k_cache.gpu.view(), v_cache.gpu.view(), c.block_size,
                                 c.num_kv_heads,     c.num_kv_heads,     c.head_dim};
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

    cpu_->WriteKv(k.cpu.view(), v.cpu.view(), batch.View(), cpu_cache);
    gpu_->WriteKv(k.gpu.view(), v.gpu.view(), batch.View(), gpu_cache);
    EXPECT_TRUE(RawBytes(*gpu_, k_cache.gpu) == RawBytes(*cpu_, k_cache.cpu)) << "K caches differ";
    EXPECT_TRUE(RawBytes(*gpu_, v_cache.gpu) == RawBytes(*cpu_, v_cache.cpu)) << "V caches differ";

    cpu_->PagedAttention(q.cpu.view(), cpu_cache, batch.View(), c.num_heads, scale, out.cpu.view());
    gpu_->PagedAttention(q.gpu.view(), gpu_cache, batch.View(), c.num_heads, scale, out.gpu.view());
    // Outputs are convex combinations of V entries in [-1, 1], so a relative error d in the
    // softmax weights moves them by at most 2d. Reordering the head_dim-term dot products shifts
    // scores by ~sqrt(head_dim) * u * sum|q_i k_i| * scale <= ~5e-6 here (head_dim <= 256), and
    // online vs two-pass softmax and expf add a few ulp. 5e-5 absolute leaves a wide margin, while
    // a wrong mask, head mapping or block lookup moves outputs by >= ~5e-3 even at 150 positions.
    testing::ExpectNear(Gpu(out), Cpu(out), 5e-5, 0.0);
  }
};

const std::vector<SeqSpec> kMixedBatch = {
    {1, 1},     // first decode step
    {1, 70},    // decode, context across two 64-position tiles
    {5, 5},     // whole prefill
    {3, 40},    // chunked prefill
    {17, 150},  // long chunked prefill, three tiles
    {1, 129},   // decode, one position past two full tiles
};

TEST_F(CudaAttentionTest, MultiHeadAttention) { RunAndCompare({4, 4, 64, 16}, kMixedBatch, 11); }

TEST_F(CudaAttentionTest, GroupedQueryAttention) {
  RunAndCompare({8, 2, 128, 16}, kMixedBatch, 12);
}

TEST_F(CudaAttentionTest, MultiQueryAttentionOddHeadDimAndBlockSize) {
  RunAndCompare({6, 1, 33, 5}, kMixedBatch, 13);
}

TEST_F(CudaAttentionTest, SingleDecodeRowAndBlockSizeOne) {
  RunAndCompare({2, 1, 1, 1}, {{1, 3}}, 14);
}

// BF16 caches: both backends read the same rounded values and accumulate in F32, so the F32
// tolerance holds.
TEST_F(CudaAttentionTest, Bf16CacheMultiHeadAttention) {
  RunAndCompare({4, 4, 64, 16}, kMixedBatch, 21, DType::kBF16);
}

TEST_F(CudaAttentionTest, Bf16CacheGroupedQueryAttention) {
  RunAndCompare({8, 2, 128, 16}, kMixedBatch, 22, DType::kBF16);
}

TEST_F(CudaAttentionTest, Bf16CacheMultiQueryOddHeadDimAndBlockSize) {
  RunAndCompare({6, 1, 33, 5}, kMixedBatch, 23, DType::kBF16);
}

TEST_F(CudaAttentionTest, LargeHeadDim) { RunAndCompare({2, 2, 256, 32}, {{2, 100}, {1, 33}}, 15); }

// The ops.h contract: a sequence's output is bit-identical alone and inside a batch.
TEST_F(CudaAttentionTest, SequenceOutputIsBatchInvariant) {
  std::mt19937 rng(16);
  const AttentionConfig c{8, 2, 64, 16};
  const BatchData batch = MakeBatch(kMixedBatch, c.block_size, 0, rng);
  const int64_t width = int64_t{c.num_kv_heads} * c.head_dim;
  const int64_t q_width = int64_t{c.num_heads} * c.head_dim;
  const int64_t cache_rows = int64_t{batch.num_blocks} * c.block_size;
  const Tensor k_cache = Upload(RandomArray(rng, DType::kF32, cache_rows, width)).gpu;
  const Tensor v_cache = Upload(RandomArray(rng, DType::kF32, cache_rows, width)).gpu;
  const KvCacheLayer cache{k_cache.view(), v_cache.view(), c.block_size,
                           c.num_kv_heads, c.num_kv_heads, c.head_dim};
  const Tensor q = Upload(RandomArray(rng, DType::kF32, batch.num_rows(), q_width)).gpu;
  const Tensor out = gpu_->Allocate(DType::kF32, batch.num_rows(), q_width);
  gpu_->PagedAttention(q.view(), cache, batch.View(), c.num_heads, 0.125f, out.view());
  const std::vector<float> batched = Download(*gpu_, out);

  const int s = 4;  // the long chunked prefill
  const int32_t begin = batch.query_start[s];
  const int32_t q_len = batch.query_start[s + 1] - begin;
  const std::vector<int32_t> query_start = {0, q_len};
  const std::vector<int32_t> context_len = {batch.context_len[s]};
  const std::vector<int32_t> table(batch.block_tables.begin() + s * batch.max_blocks_per_seq,
                                   batch.block_tables.begin() + (s + 1) * batch.max_blocks_per_seq);
  const std::vector<int64_t> slots(batch.slot_mapping.begin() + begin,
                                   batch.slot_mapping.begin() + begin + q_len);
  const AttentionBatch alone{query_start, context_len, table, batch.max_blocks_per_seq, slots};
  const Tensor out_alone = gpu_->Allocate(DType::kF32, q_len, q_width);
  gpu_->PagedAttention(q.view().Rows(begin, q_len), cache, alone, c.num_heads, 0.125f,
                       out_alone.view());
  testing::ExpectBitwiseEqual(Download(*gpu_, out_alone),
                              std::vector<float>(batched.begin() + begin * q_width,
                                                 batched.begin() + (begin + q_len) * q_width));
}

// FoldedPagedAttention (share, cluster, probabilities workspace) against the CPU backend: K from
// one layer (compact: fewer K heads than V heads), V from a layer that stores no K.
class CudaFoldedAttentionTest : public BackendPairTest {
 protected:
  struct Layers {
    TensorPair k_cache, v_cache, v_only;
    KvCacheLayer cpu_k, gpu_k, cpu_v, gpu_v;
  };

  // A K layer with k_heads K and v_heads V heads, and a V-only layer with v_heads V heads; this
  // step's rows written through WriteKv on both backends (caches compared bit for bit).
  Layers MakeLayers(const BatchData& batch, int k_heads, int v_heads, int d, int32_t bs,
                    DType dtype, std::mt19937& rng) {
    Layers l;
    const int64_t rows = int64_t{batch.num_blocks} * bs, n = batch.num_rows();
    l.k_cache = Upload(RandomArray(rng, dtype, rows, int64_t{k_heads} * d));
    l.v_cache = Upload(RandomArray(rng, dtype, rows, int64_t{v_heads} * d));
    l.v_only = Upload(RandomArray(rng, dtype, rows, int64_t{v_heads} * d));
    l.cpu_k = {l.k_cache.cpu.view(), l.v_cache.cpu.view(), bs, k_heads, v_heads, d};
    l.gpu_k = {l.k_cache.gpu.view(), l.v_cache.gpu.view(), bs, k_heads, v_heads, d};
    l.cpu_v = {{}, l.v_only.cpu.view(), bs, 0, v_heads, d};
    l.gpu_v = {{}, l.v_only.gpu.view(), bs, 0, v_heads, d};
    const TensorPair k = Upload(RandomArray(rng, DType::kF32, n, int64_t{k_heads} * d));
    const TensorPair v = Upload(RandomArray(rng, DType::kF32, n, int64_t{v_heads} * d));
    const TensorPair v2 = Upload(RandomArray(rng, DType::kF32, n, int64_t{v_heads} * d));
    cpu_->WriteKv(k.cpu.view(), v.cpu.view(), batch.View(), l.cpu_k);
    gpu_->WriteKv(k.gpu.view(), v.gpu.view(), batch.View(), l.gpu_k);
    cpu_->WriteKv({}, v2.cpu.view(), batch.View(), l.cpu_v);
    gpu_->WriteKv({}, v2.gpu.view(), batch.View(), l.gpu_v);
    EXPECT_TRUE(RawBytes(*gpu_, l.k_cache.gpu) == RawBytes(*cpu_, l.k_cache.cpu));
    EXPECT_TRUE(RawBytes(*gpu_, l.v_only.gpu) == RawBytes(*cpu_, l.v_only.cpu));
    return l;
  }

  void RunFolded(int h, int k_heads, int v_heads, int d, int32_t bs, DType dtype,
                 const AttentionHeadMap& map, uint32_t seed) {
    std::mt19937 rng(seed);
    const BatchData batch = MakeBatch(kMixedBatch, bs, 2, rng);
    const Layers l = MakeLayers(batch, k_heads, v_heads, d, bs, dtype, rng);
    const int64_t n = batch.num_rows(), width = int64_t{h} * d;
    const TensorPair q = Upload(RandomArray(rng, DType::kF32, n, width));
    const TensorPair out = Zeros(n, width);
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    cpu_->FoldedPagedAttention(q.cpu.view(), l.cpu_k, l.cpu_v, map, batch.View(), h, scale,
                               out.cpu.view());
    gpu_->FoldedPagedAttention(q.gpu.view(), l.gpu_k, l.gpu_v, map, batch.View(), h, scale,
                               out.gpu.view());
    testing::ExpectNear(Gpu(out), Cpu(out), 5e-5, 0.0);
  }
};

TEST_F(CudaFoldedAttentionTest, SharePermutedScoreHeadsVOnlyLayer) {
  const std::vector<int32_t> score = {3, 0, 5, 1, 4, 2}, k = {1, 0, 2, 0, 2, 1};
  RunFolded(6, 3, 3, 64, 16, DType::kF32, {score, k, {}}, 31);
  RunFolded(6, 3, 3, 64, 16, DType::kBF16, {score, k, {}}, 32);
}

TEST_F(CudaFoldedAttentionTest, ClusterPerSequenceMapsCompactK) {
  // 6 sequences x 4 heads; two clusters per sequence (K heads 0 and 1), representatives score.
  std::vector<int32_t> score, k;
  const int32_t cluster_of[6][4] = {{0, 0, 1, 1}, {0, 1, 0, 1}, {0, 1, 1, 1},
                                    {0, 0, 0, 1}, {0, 1, 1, 0}, {0, 0, 1, 0}};
  for (const auto& seq : cluster_of) {
    for (int h = 0; h < 4; ++h) {
      int rep = 0;
      while (seq[rep] != seq[h]) ++rep;
      score.push_back(rep);
      k.push_back(seq[h]);
    }
  }
  const std::vector<int32_t> v = {0, 1, 2, 3};
  RunFolded(4, 2, 4, 33, 5, DType::kF32, {score, k, v}, 33);
}

// Probabilities written by one call and read by another give the recomputed bits on the GPU too.
TEST_F(CudaFoldedAttentionTest, StoredProbabilitiesGiveRecomputedBits) {
  std::mt19937 rng(34);
  const int h = 8, d = 64;
  const BatchData batch = MakeBatch(kMixedBatch, 16, 2, rng);
  const Layers l = MakeLayers(batch, 2, 2, d, 16, DType::kF32, rng);
  const int64_t n = batch.num_rows(), width = int64_t{h} * d;
  const Tensor q = Upload(RandomArray(rng, DType::kF32, n, width)).gpu;
  const Tensor out = gpu_->Allocate(DType::kF32, n, width);
  const Tensor recomputed = gpu_->Allocate(DType::kF32, n, width);
  const Tensor p = gpu_->Allocate(DType::kF32, n * h, 160);
  AttentionProbs probs{p.view(), AttentionProbs::Mode::kWrite};
  gpu_->FoldedPagedAttention(q.view(), l.gpu_k, l.gpu_k, {}, batch.View(), h, 0.125f, out.view(),
                             &probs);
  gpu_->FoldedPagedAttention(q.view(), l.gpu_k, l.gpu_v, {}, batch.View(), h, 0.125f,
                             recomputed.view());
  probs.mode = AttentionProbs::Mode::kRead;
  gpu_->FoldedPagedAttention({}, l.gpu_k, l.gpu_v, {}, batch.View(), h, 0.125f, out.view(), &probs);
  testing::ExpectBitwiseEqual(Download(*gpu_, out), Download(*gpu_, recomputed));
}
}  // namespace
}  // namespace kvfold
