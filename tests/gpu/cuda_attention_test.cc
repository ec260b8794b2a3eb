// WriteKv, PagedAttention and FoldedPagedAttention of the CUDA backend against the CPU reference:
// several sequences of different lengths (decode, prefill, chunked prefill), MHA, GQA and MQA,
// several blocks per sequence with scrambled block ids, contexts longer than the kernel's
// 64-position tile; F32 and BF16 caches (both backends round to nearest even on write, so their
// caches agree bit for bit). Then the split-K decode and tiled prefill kernels: long contexts
// around the 256-position softmax partitions, prefill chunks over a cached prefix, every folded
// mode, and the bit-identity guarantees (a sequence's bits do not depend on its neighbours, on
// which kernel served it, or on whether P was kept).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/kernels.h"
#include "tests/gpu/backend_pair.h"

namespace kvfold {
namespace {

using testing::BackendPairTest;
using testing::HostArray;
using testing::RandomArray;
using testing::TensorPair;
using testing::Uniform;

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

// The folded modes as the model uses them (h query heads over kv KV heads, GQA groups of h / kv).
// kv_from is full attention over another layer's cache: the same kernel call as kFull.
enum class Fold { kFull, kShare, kShareKeptP, kCluster };
constexpr Fold kAllFolds[] = {Fold::kFull, Fold::kShare, Fold::kShareKeptP, Fold::kCluster};

std::string FoldName(Fold fold) {
  switch (fold) {
    case Fold::kFull:
      return "full";
    case Fold::kShare:
      return "share";
    case Fold::kShareKeptP:
      return "share with kept P";
    case Fold::kCluster:
      return "cluster";
  }
  return "?";
}

struct MapData {
  std::vector<int32_t> score, k, v;
  AttentionHeadMap View() const { return {score, k, v}; }
};

// share: a random alignment permutation of score heads, K of the score head's GQA group, V of the
// (V-only) layer by GQA. cluster: per sequence, heads split at random into two clusters whose
// representative (lowest head) scores against K head = cluster id; V of the head's own group.
MapData MakeMap(Fold fold, int h, int kv, int num_seqs, std::mt19937& rng) {
  MapData m;
  const int group = h / kv;
  if (fold == Fold::kShare || fold == Fold::kShareKeptP) {
    m.score.resize(h);
    std::iota(m.score.begin(), m.score.end(), 0);
    std::shuffle(m.score.begin(), m.score.end(), rng);
    for (int32_t sh : m.score) m.k.push_back(sh / group);
  } else if (fold == Fold::kCluster) {
    for (int s = 0; s < num_seqs; ++s) {
      std::vector<int32_t> cluster(h);
      for (int32_t& c : cluster) c = static_cast<int32_t>(rng() % 2);
      for (int hh = 0; hh < h; ++hh) {
        int rep = 0;
        while (cluster[rep] != cluster[hh]) ++rep;
        m.score.push_back(rep);
        m.k.push_back(cluster[hh]);
        m.v.push_back(hh / group);
      }
    }
  }
  return m;
}

// The map rows of sequences `keep` (maps shared by every sequence are kept as they are).
MapData SubMap(const MapData& m, const std::vector<int>& keep, int h, int num_seqs) {
  if (m.score.size() != static_cast<size_t>(h) * num_seqs || num_seqs == 1) return m;
  MapData sub;
  for (int s : keep) {
    sub.score.insert(sub.score.end(), m.score.begin() + s * h, m.score.begin() + (s + 1) * h);
    sub.k.insert(sub.k.end(), m.k.begin() + s * h, m.k.begin() + (s + 1) * h);
    sub.v.insert(sub.v.end(), m.v.begin() + s * h, m.v.begin() + (s + 1) * h);
  }
  return sub;
}

// Sequences `keep` of `b`, in that order, over the same cache blocks; their tables trimmed to what
// they need plus one entry, so the block-table width (and the kernels' partition bound) changes.
BatchData SubBatch(const BatchData& b, const std::vector<int>& keep, int32_t block_size) {
  BatchData sub;
  sub.num_blocks = b.num_blocks;
  for (int s : keep) {
    sub.max_blocks_per_seq =
        std::max(sub.max_blocks_per_seq, (b.context_len[s] + block_size - 1) / block_size + 1);
  }
  sub.query_start.push_back(0);
  for (int s : keep) {
    const int32_t begin = b.query_start[s], q_len = b.query_start[s + 1] - begin;
    const auto table = b.block_tables.begin() + int64_t{s} * b.max_blocks_per_seq;
    sub.block_tables.insert(sub.block_tables.end(), table, table + sub.max_blocks_per_seq);
    sub.slot_mapping.insert(sub.slot_mapping.end(), b.slot_mapping.begin() + begin,
                            b.slot_mapping.begin() + begin + q_len);
    sub.query_start.push_back(sub.query_start.back() + q_len);
    sub.context_len.push_back(b.context_len[s]);
  }
  return sub;
}

// Rows [begin, begin + count) of a row-major host array of `cols` columns.
std::vector<float> HostRows(const std::vector<float>& a, int64_t cols, int64_t begin,
                            int64_t count) {
  return std::vector<float>(a.begin() + begin * cols, a.begin() + (begin + count) * cols);
}

struct SplitSetup {
  int h = 8;
  int kv = 2;
  int d = 128;
  int32_t bs = 16;
  DType dtype = DType::kF32;
};

// The split-K decode and tiled prefill kernels against the CPU backend and against themselves.
// Scores use 4 / sqrt(d) (sharper than a model's 1 / sqrt(d): score standard deviation ~1.3) so
// that one position too many or too few moves some output by more than the tolerance.
class CudaSplitAttentionTest : public CudaFoldedAttentionTest {
 protected:
  static constexpr float kScaleFactor = 4.0f;
  // Outputs are convex combinations of V entries in [-1, 1]. The backends order the score dot
  // products and the softmax sums differently: scores differ by ~sqrt(d) * 2^-24 * sum|q k| *
  // scale (~2e-6 at d = 128), moving P by that relative amount and outputs by at most twice it;
  // the ordered sums of up to 16k terms add ~sqrt(n) ulps of partial sums below 0.1 (~1e-6).
  // 3e-5 leaves a margin of ten. A position wrongly in or out of a row's mask moves the outputs
  // of the head that weights it most by ~exp(s_j) / (n * E[exp(s)]) * |v_j - out|: >= 1e-3 up to
  // n = 257, ~3e-4 at 4097 and ~1e-4 at 16k; wrong heads, blocks or partitions move them by more.
  static constexpr double kTolerance = 3e-5;

  void Poison(const Tensor& t) {
    const std::vector<float> nan(t.view().numel(), std::numeric_limits<float>::quiet_NaN());
    gpu_->CopyFromHost(nan.data(), t.view());
  }
  TensorPair PoisonedOutput(int64_t rows, int64_t cols) {
    TensorPair t = Zeros(rows, cols);
    Poison(t.gpu);
    return t;
  }

  // One folded call of the batch `seqs` on both backends, compared within kTolerance; with kept P,
  // also the GPU's kRead output against its own recomputation, bit for bit.
  void RunCase(const SplitSetup& c, Fold fold, const std::vector<SeqSpec>& seqs, uint32_t seed) {
    SCOPED_TRACE("fold " + FoldName(fold) + ", head_dim " + std::to_string(c.d) + ", " +
                 (c.dtype == DType::kBF16 ? "BF16" : "F32") + " cache, seed " +
                 std::to_string(seed));
    std::mt19937 rng(seed);
    const BatchData batch = MakeBatch(seqs, c.bs, 2, rng);
    const Layers l = MakeLayers(batch, c.kv, c.kv, c.d, c.bs, c.dtype, rng);
    const auto num_seqs = static_cast<int>(seqs.size());
    const MapData map = MakeMap(fold, c.h, c.kv, num_seqs, rng);
    const int64_t n = batch.num_rows(), width = int64_t{c.h} * c.d;
    const TensorPair q = Upload(RandomArray(rng, DType::kF32, n, width));
    const float scale = kScaleFactor / std::sqrt(static_cast<float>(c.d));
    const bool v_only = fold == Fold::kShare || fold == Fold::kShareKeptP;
    const KvCacheLayer& cpu_v = v_only ? l.cpu_v : l.cpu_k;
    const KvCacheLayer& gpu_v = v_only ? l.gpu_v : l.gpu_k;
    const TensorPair out = PoisonedOutput(n, width);
    if (fold != Fold::kShareKeptP) {
      cpu_->FoldedPagedAttention(q.cpu.view(), l.cpu_k, cpu_v, map.View(), batch.View(), c.h, scale,
                                 out.cpu.view());
      gpu_->FoldedPagedAttention(q.gpu.view(), l.gpu_k, gpu_v, map.View(), batch.View(), c.h, scale,
                                 out.gpu.view());
      testing::ExpectNear(Gpu(out), Cpu(out), kTolerance, 0.0);
      return;
    }
    // The source (full) layer keeps P; the share layer reads it.
    const int32_t max_context =
        *std::max_element(batch.context_len.begin(), batch.context_len.end());
    const TensorPair p = PoisonedOutput(n * c.h, max_context);
    const TensorPair source_out = PoisonedOutput(n, width);
    AttentionProbs cpu_p{p.cpu.view(), AttentionProbs::Mode::kWrite};
    AttentionProbs gpu_p{p.gpu.view(), AttentionProbs::Mode::kWrite};
    cpu_->FoldedPagedAttention(q.cpu.view(), l.cpu_k, l.cpu_k, {}, batch.View(), c.h, scale,
                               source_out.cpu.view(), &cpu_p);
    gpu_->FoldedPagedAttention(q.gpu.view(), l.gpu_k, l.gpu_k, {}, batch.View(), c.h, scale,
                               source_out.gpu.view(), &gpu_p);
    testing::ExpectNear(Gpu(source_out), Cpu(source_out), kTolerance, 0.0);
    cpu_p.mode = gpu_p.mode = AttentionProbs::Mode::kRead;
    cpu_->FoldedPagedAttention({}, l.cpu_k, cpu_v, map.View(), batch.View(), c.h, scale,
                               out.cpu.view(), &cpu_p);
    gpu_->FoldedPagedAttention({}, l.gpu_k, gpu_v, map.View(), batch.View(), c.h, scale,
                               out.gpu.view(), &gpu_p);
    testing::ExpectNear(Gpu(out), Cpu(out), kTolerance, 0.0);
    const Tensor recomputed = gpu_->Allocate(DType::kF32, n, width);
    Poison(recomputed);
    gpu_->FoldedPagedAttention(q.gpu.view(), l.gpu_k, gpu_v, map.View(), batch.View(), c.h, scale,
                               recomputed.view());
    testing::ExpectBitwiseEqual(Gpu(out), Download(*gpu_, recomputed));
  }
};

// Decode rows (split-K) at contexts on both sides of the 256-position partitions, up to 16k.
const std::vector<SeqSpec> kDecodeContexts = {{1, 1},   {1, 255},  {1, 256},
                                              {1, 257}, {1, 4097}, {1, 16384}};

TEST_F(CudaSplitAttentionTest, DecodeContextsEveryFoldDtypeAndHeadDim) {
  uint32_t seed = 100;
  for (const SplitSetup& c :
       {SplitSetup{8, 2, 64, 16}, SplitSetup{8, 2, 128, 16}, SplitSetup{8, 2, 33, 5}}) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (Fold fold : kAllFolds) {
        SplitSetup setup = c;
        setup.dtype = dtype;
        RunCase(setup, fold, kDecodeContexts, ++seed);
      }
    }
  }
}

// Prefill chunks (tiled kernel) of 1, 7, 64 and 300 rows over cached prefixes of 0, 100 and 1000
// positions; full attention for every pair, every fold for two of them.
TEST_F(CudaSplitAttentionTest, PrefillChunksOverCachedPrefix) {
  uint32_t seed = 200;
  for (int32_t chunk : {1, 7, 64, 300}) {
    for (int32_t prefix : {0, 100, 1000}) {
      SCOPED_TRACE("chunk " + std::to_string(chunk) + " over prefix " + std::to_string(prefix));
      RunCase({}, Fold::kFull, {{chunk, prefix + chunk}}, ++seed);
    }
  }
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (Fold fold : kAllFolds) {
      RunCase({8, 2, 128, 16, dtype}, fold, {{64, 1064}}, ++seed);
      RunCase({8, 2, 64, 16, dtype}, fold, {{7, 107}}, ++seed);
    }
  }
}

// Decodes and prefill chunks in one call, every fold, an odd head_dim and block size included.
TEST_F(CudaSplitAttentionTest, MixedBatchEveryFold) {
  const std::vector<SeqSpec> mixed = {{1, 4097}, {300, 400}, {1, 1},    {7, 7},
                                      {1, 257},  {64, 1064}, {17, 273}, {1, 256}};
  uint32_t seed = 300;
  for (const SplitSetup& c : {SplitSetup{8, 2, 128, 16, DType::kBF16}, SplitSetup{8, 2, 33, 5}}) {
    for (Fold fold : kAllFolds) RunCase(c, fold, mixed, ++seed);
  }
}

// A sequence's bits do not depend on its neighbours: a decode row and a prefill chunk computed
// alone, beside a long-context decode, beside a prefill neighbour, and all together (block tables
// of different widths, so different partition bounds and grids).
TEST_F(CudaSplitAttentionTest, SequenceBitsIndependentOfNeighbours) {
  const std::vector<SeqSpec> seqs = {{1, 3000}, {40, 340}, {1, 20000}, {300, 1300}};
  const std::vector<std::vector<int>> variants = {{0}, {1}, {0, 2}, {3, 1}, {2, 0, 3, 1}};
  uint32_t seed = 400;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (Fold fold : {Fold::kFull, Fold::kCluster}) {
      SCOPED_TRACE(FoldName(fold));
      const SplitSetup c{8, 2, 128, 16, dtype};
      std::mt19937 rng(++seed);
      const BatchData batch = MakeBatch(seqs, c.bs, 2, rng);
      const Layers l = MakeLayers(batch, c.kv, c.kv, c.d, c.bs, c.dtype, rng);
      const MapData map = MakeMap(fold, c.h, c.kv, static_cast<int>(seqs.size()), rng);
      const int64_t width = int64_t{c.h} * c.d;
      const std::vector<float> q = Uniform(rng, batch.num_rows() * width);
      // Output rows of every kept sequence, by original sequence index.
      auto run = [&](const std::vector<int>& keep) {
        const BatchData sub = SubBatch(batch, keep, c.bs);
        const MapData sub_map = SubMap(map, keep, c.h, static_cast<int>(seqs.size()));
        std::vector<float> sub_q;
        for (int s : keep) {
          const std::vector<float> rows = HostRows(q, width, batch.query_start[s],
                                                   batch.query_start[s + 1] - batch.query_start[s]);
          sub_q.insert(sub_q.end(), rows.begin(), rows.end());
        }
        const Tensor q_gpu = gpu_->Allocate(DType::kF32, sub.num_rows(), width);
        gpu_->CopyFromHost(sub_q.data(), q_gpu.view());
        const Tensor out = gpu_->Allocate(DType::kF32, sub.num_rows(), width);
        Poison(out);
        gpu_->FoldedPagedAttention(q_gpu.view(), l.gpu_k, l.gpu_k, sub_map.View(), sub.View(), c.h,
                                   0.125f, out.view());
        const std::vector<float> all = Download(*gpu_, out);
        std::vector<std::vector<float>> by_seq(seqs.size());
        for (size_t i = 0; i < keep.size(); ++i) {
          by_seq[keep[i]] =
              HostRows(all, width, sub.query_start[i], sub.query_start[i + 1] - sub.query_start[i]);
        }
        return by_seq;
      };
      const std::vector<float> decode_alone = run({0})[0];
      const std::vector<float> prefill_alone = run({1})[1];
      for (const float x : decode_alone) ASSERT_FALSE(std::isnan(x));
      for (const float x : prefill_alone) ASSERT_FALSE(std::isnan(x));
      for (const std::vector<int>& keep : variants) {
        const std::vector<std::vector<float>> got = run(keep);
        if (!got[0].empty()) testing::ExpectBitwiseEqual(got[0], decode_alone);
        if (!got[1].empty()) testing::ExpectBitwiseEqual(got[1], prefill_alone);
      }
    }
  }
}

// The split-K decode kernel and the tiled prefill kernel give the same bits for the same query:
// rows of a 300-row chunk at positions 511, 512 (a partition boundary) and 699 against a decode
// step of the same sequence at that position (the same q row, the same cache).
TEST_F(CudaSplitAttentionTest, DecodeKernelMatchesPrefillKernelBits) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const SplitSetup c{8, 2, 128, 16, dtype};
    std::mt19937 rng(dtype == DType::kF32 ? 500 : 501);
    const BatchData chunk = MakeBatch({{300, 700}}, c.bs, 2, rng);
    const Layers l = MakeLayers(chunk, c.kv, c.kv, c.d, c.bs, c.dtype, rng);
    const int64_t width = int64_t{c.h} * c.d;
    const HostArray q = RandomArray(rng, DType::kF32, chunk.num_rows(), width);
    const Tensor q_gpu = Upload(q).gpu;
    const Tensor out = gpu_->Allocate(DType::kF32, chunk.num_rows(), width);
    Poison(out);
    gpu_->FoldedPagedAttention(q_gpu.view(), l.gpu_k, l.gpu_k, {}, chunk.View(), c.h, 0.125f,
                               out.view());
    const std::vector<float> prefill = Download(*gpu_, out);
    for (const int32_t pos : {511, 512, 699}) {
      SCOPED_TRACE("position " + std::to_string(pos));
      const int64_t row = pos - 400;
      const std::vector<int32_t> query_start = {0, 1};
      const std::vector<int32_t> context_len = {pos + 1};
      const std::vector<int64_t> slots = {chunk.slot_mapping[row]};
      const AttentionBatch decode{query_start, context_len, chunk.block_tables,
                                  chunk.max_blocks_per_seq, slots};
      const Tensor decode_out = gpu_->Allocate(DType::kF32, 1, width);
      Poison(decode_out);
      gpu_->FoldedPagedAttention(q_gpu.view().Rows(row, 1), l.gpu_k, l.gpu_k, {}, decode, c.h,
                                 0.125f, decode_out.view());
      testing::ExpectBitwiseEqual(Download(*gpu_, decode_out), HostRows(prefill, width, row, 1));
    }
  }
}

// When the decode scores would need too much workspace, the values phase recomputes them from K:
// the same arithmetic, so the same outputs and stored P, bit for bit.
TEST_F(CudaSplitAttentionTest, RecomputedDecodeScoresGiveKeptScoreBits) {
  std::vector<SeqSpec> seqs = kDecodeContexts;
  seqs.push_back({7, 300});
  uint32_t seed = 600;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (Fold fold : {Fold::kFull, Fold::kCluster}) {
      SCOPED_TRACE(FoldName(fold));
      const SplitSetup c{8, 2, 64, 16, dtype};
      std::mt19937 rng(++seed);
      const BatchData batch = MakeBatch(seqs, c.bs, 2, rng);
      const Layers l = MakeLayers(batch, c.kv, c.kv, c.d, c.bs, c.dtype, rng);
      const MapData map = MakeMap(fold, c.h, c.kv, static_cast<int>(seqs.size()), rng);
      const int64_t n = batch.num_rows(), width = int64_t{c.h} * c.d;
      const Tensor q = Upload(RandomArray(rng, DType::kF32, n, width)).gpu;
      auto run = [&](size_t max_score_bytes) {
        const size_t saved = cuda::MaxScoreWorkspaceBytes();
        cuda::SetMaxScoreWorkspaceBytes(max_score_bytes);
        const Tensor out = gpu_->Allocate(DType::kF32, n, width);
        const Tensor p = gpu_->Allocate(DType::kF32, n * c.h, 16384);
        Poison(out);
        Poison(p);
        AttentionProbs probs{p.view(), AttentionProbs::Mode::kWrite};
        // Cluster maps give one score head several K heads across sequences but one per sequence,
        // as writing P requires.
        gpu_->FoldedPagedAttention(q.view(), l.gpu_k, l.gpu_k, map.View(), batch.View(), c.h,
                                   0.125f, out.view(), &probs);
        cuda::SetMaxScoreWorkspaceBytes(saved);
        return std::make_pair(Download(*gpu_, out), Download(*gpu_, p));
      };
      const auto kept = run(size_t{1} << 40);
      const auto recomputed = run(0);
      testing::ExpectBitwiseEqual(recomputed.first, kept.first);
      testing::ExpectBitwiseEqual(recomputed.second, kept.second);
    }
  }
}

}  // namespace
}  // namespace kvfold
