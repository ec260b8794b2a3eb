// FoldedPagedAttention (the paged-attention kernel family of attention plans) against a
// double-precision reference of its formula, per output head h of sequence s:
//   P = softmax(scale * q[row, score_head] · K_k_layer[k_head]ᵀ),  out[row, h] = P ·
//   V_v_layer[v_head]
// over scrambled block tables, prefill chunks over cached prefixes and decode rows. Modes: GQA
// identity, share (K of one layer, V of another that stores no K, permuted score heads), cluster
// (compact K cache of representatives, per-sequence maps), kv_from; F32 and BF16 caches. Bit-level
// properties: identity map == PagedAttention, cluster == per-head calls, probabilities written
// then read == recomputed, every ISA path and thread count == generic single-thread, a sequence
// alone == the same sequence in a batch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/vec_math.h"

namespace kvfold {
namespace {

struct Shape {
  int num_heads, head_dim, block_size;
  std::vector<int> context_len, query_len;
};

const Shape kShapes[] = {
    {6, 8, 1, {5, 9}, {5, 1}},                    // block size 1, prefill + decode
    {9, 16, 3, {11, 7, 20}, {4, 7, 1}},           // odd block size, chunk over a cached prefix
    {8, 64, 16, {40, 1, 33, 17}, {1, 1, 3, 17}},  // mixed decode / chunk / prefill
    {4, 128, 16, {70, 2}, {1, 2}},                // head_dim 128 decode
    {6, 40, 5, {23, 9}, {2, 9}},                  // head_dim not a multiple of 16
    {9, 32, 16, {18, 3}, {1, 3}},                 // head_dim 32
};

float CacheValue(const TensorView& t, int64_t i) {
  return t.dtype == DType::kBF16 ? cpu::Bf16ToF32(static_cast<const uint16_t*>(t.data)[i])
                                 : t.f32()[i];
}

// One layer's cache, filled through WriteKv with random K/V for every position of every sequence.
struct Layer {
  Tensor k, v;
  KvCacheLayer cache;
};

// Sequences in a scrambled block pool, their query rows and layers.
class Scene {
 public:
  Scene(const Shape& shape, DType dtype, uint32_t seed)
      : shape_(shape), dtype_(dtype), rng_(seed), ops_(NewCpuOps(1)) {
    const int num_seqs = static_cast<int>(shape.context_len.size());
    int total = 0;
    for (int len : shape.context_len) {
      max_blocks_ = std::max(max_blocks_, Blocks(len));
      total += Blocks(len);
    }
    std::vector<int32_t> ids(total + 2);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng_);
    num_slots_ = static_cast<int64_t>(ids.size()) * shape.block_size;
    tables_.assign(num_seqs * max_blocks_, 0);
    query_start_ = {0};
    for (int s = 0, next = 0; s < num_seqs; ++s) {
      for (int b = 0; b < Blocks(shape.context_len[s]); ++b)
        tables_[s * max_blocks_ + b] = ids[next++];
      query_start_.push_back(query_start_.back() + shape.query_len[s]);
      for (int p = 0; p < shape.context_len[s]; ++p) all_slots_.push_back(Slot(s, p));
    }
  }

  int num_seqs() const { return static_cast<int>(shape_.context_len.size()); }
  int64_t rows() const { return query_start_.back(); }
  int d() const { return shape_.head_dim; }
  int64_t Slot(int s, int pos) const {
    return int64_t{tables_[s * max_blocks_ + pos / shape_.block_size]} * shape_.block_size +
           pos % shape_.block_size;
  }
  int Position(int s, int j) const { return shape_.context_len[s] - shape_.query_len[s] + j; }
  AttentionBatch batch() const {
    return {query_start_, shape_.context_len, tables_, max_blocks_, {}};
  }

  std::vector<float> Random(int64_t n) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> x(n);
    for (float& f : x) f = dist(rng_);
    return x;
  }

  // A layer storing k_heads K heads (0: none) and v_heads V heads, written through WriteKv.
  Layer MakeLayer(int k_heads, int v_heads) {
    Layer l;
    l.k = ops_->Allocate(dtype_, k_heads > 0 ? num_slots_ : 0, k_heads * d());
    l.v = ops_->Allocate(dtype_, num_slots_, v_heads * d());
    l.cache = {l.k.view(), l.v.view(), shape_.block_size, k_heads, v_heads, d()};
    const auto n = static_cast<int64_t>(all_slots_.size());
    std::vector<float> k = Random(n * k_heads * d()), v = Random(n * v_heads * d());
    AttentionBatch writes;
    writes.slot_mapping = all_slots_;
    const TensorView kv =
        k_heads > 0 ? TensorView{k.data(), DType::kF32, n, k_heads * d()} : TensorView{};
    ops_->WriteKv(kv, {v.data(), DType::kF32, n, v_heads * d()}, writes, l.cache);
    // WriteKv stored each value in the cache's dtype, rounded to nearest even.
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < k_heads * d(); ++c) {
        const float want = Stored(k[r * k_heads * d() + c]);
        EXPECT_EQ(CacheValue(l.cache.k, all_slots_[r] * k_heads * d() + c), want);
      }
      for (int64_t c = 0; c < v_heads * d(); ++c) {
        const float want = Stored(v[r * v_heads * d() + c]);
        EXPECT_EQ(CacheValue(l.cache.v, all_slots_[r] * v_heads * d() + c), want);
      }
    }
    return l;
  }

  float Stored(float x) const {
    return dtype_ == DType::kBF16 ? cpu::Bf16ToF32(cpu::F32ToBf16(x)) : x;
  }

  const Shape& shape() const { return shape_; }
  const std::vector<int32_t>& query_start() const { return query_start_; }
  const std::vector<int32_t>& tables() const { return tables_; }
  int max_blocks() const { return max_blocks_; }

 private:
  int Blocks(int len) const { return (len + shape_.block_size - 1) / shape_.block_size; }

  Shape shape_;
  DType dtype_;
  std::mt19937 rng_;
  std::unique_ptr<Ops> ops_;
  int max_blocks_ = 0;
  int64_t num_slots_ = 0;
  std::vector<int32_t> tables_, query_start_;
  std::vector<int64_t> all_slots_;
};

// Full per-sequence maps (num_seqs x H) for the reference; Spans() picks what the kernel gets.
struct Maps {
  std::vector<int32_t> score, k, v;  // each num_seqs * H
};

Maps GqaMaps(int num_seqs, int h, int score_group, int k_group, int v_group) {
  Maps m;
  for (int s = 0; s < num_seqs; ++s) {
    for (int i = 0; i < h; ++i) {
      m.score.push_back(i / score_group);
      m.k.push_back(i / k_group);
      m.v.push_back(i / v_group);
    }
  }
  return m;
}

// The first row of each map, for maps that are the same in every sequence.
std::vector<int32_t> FirstRow(const std::vector<int32_t>& full, int h) {
  return {full.begin(), full.begin() + h};
}

std::vector<double> Reference(const Scene& scene, const std::vector<float>& q, int q_heads,
                              const Layer& kl, const Layer& vl, const Maps& maps, int h,
                              float scale) {
  const int d = scene.d();
  const int64_t k_width = kl.cache.k.cols, v_width = vl.cache.v.cols;
  std::vector<double> out(scene.rows() * h * d);
  for (int s = 0; s < scene.num_seqs(); ++s) {
    for (int j = 0; j < scene.shape().query_len[s]; ++j) {
      const int64_t row = scene.query_start()[s] + j;
      const int pos = scene.Position(s, j);
      for (int head = 0; head < h; ++head) {
        const int sh = maps.score[s * h + head], kh = maps.k[s * h + head],
                  vh = maps.v[s * h + head];
        std::vector<double> p(pos + 1);
        double max_score = -1e300, denom = 0;
        for (int t = 0; t <= pos; ++t) {
          double dot = 0;
          for (int i = 0; i < d; ++i) {
            dot += double(q[row * q_heads * d + sh * d + i]) *
                   CacheValue(kl.cache.k, scene.Slot(s, t) * k_width + kh * d + i);
          }
          p[t] = dot * scale;
          max_score = std::max(max_score, p[t]);
        }
        for (double& x : p) denom += (x = std::exp(x - max_score));
        for (int i = 0; i < d; ++i) {
          double want = 0;
          for (int t = 0; t <= pos; ++t) {
            want += p[t] * CacheValue(vl.cache.v, scene.Slot(s, t) * v_width + vh * d + i);
          }
          out[(row * h + head) * d + i] = want / denom;
        }
      }
    }
  }
  return out;
}

void ExpectNear(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-5 + 1e-4 * std::abs(want[i])) << "element " << i;
  }
}

std::vector<float> RunFolded(Ops& ops, const std::vector<float>& q, int q_heads, const Layer& kl,
                             const Layer& vl, const AttentionHeadMap& map,
                             const AttentionBatch& batch, int h, int d, float scale,
                             const AttentionProbs* probs = nullptr) {
  const int64_t n = batch.query_start.back();
  std::vector<float> out(n * h * d, -7.0f);
  const TensorView qv = q.empty() ? TensorView{}
                                  : TensorView{const_cast<float*>(q.data()), DType::kF32, n,
                                               static_cast<int64_t>(q_heads) * d};
  ops.FoldedPagedAttention(qv, kl.cache, vl.cache, map, batch, h, scale,
                           {out.data(), DType::kF32, n, static_cast<int64_t>(h) * d}, probs);
  return out;
}

std::vector<cpu::Isa> SupportedIsas() {
  std::vector<cpu::Isa> isas;
  for (cpu::Isa isa : {cpu::Isa::kGeneric, cpu::Isa::kAvx2, cpu::Isa::kAvx512}) {
    if (cpu::IsaSupported(isa)) isas.push_back(isa);
  }
  return isas;
}

// Every ISA path with 1 and 3 threads gives the generic single-thread bits.
void ExpectSameOnEveryIsa(const std::vector<float>& generic,
                          const std::function<std::vector<float>(Ops&)>& run) {
  for (cpu::Isa isa : SupportedIsas()) {
    for (int threads : {1, 3}) {
      std::unique_ptr<Ops> ops = NewCpuOps(threads, isa);
      EXPECT_EQ(run(*ops), generic) << cpu::IsaName(isa) << ", " << threads << " threads";
    }
  }
}

// Each sequence alone (its rows, its table row, its map row) gives the bits it gets in the batch.
void ExpectBatchInvariant(
    const Scene& scene, const std::vector<float>& batched, int h,
    const std::function<std::vector<float>(const AttentionBatch&, int)>& run) {
  const int64_t width = static_cast<int64_t>(h) * scene.d();
  for (int s = 0; s < scene.num_seqs(); ++s) {
    const int32_t begin = scene.query_start()[s], len = scene.shape().query_len[s];
    const std::vector<int32_t> qs = {0, len}, ctx = {scene.shape().context_len[s]};
    const std::vector<int32_t> table(scene.tables().begin() + s * scene.max_blocks(),
                                     scene.tables().begin() + (s + 1) * scene.max_blocks());
    const AttentionBatch alone{qs, ctx, table, scene.max_blocks(), {}};
    const std::vector<float> got = run(alone, s);
    const std::vector<float> want(batched.begin() + begin * width,
                                  batched.begin() + (begin + len) * width);
    EXPECT_EQ(got, want) << "sequence " << s << " alone";
  }
}

// The query rows of sequence s (for runs of one sequence alone).
std::vector<float> SeqRows(const Scene& scene, const std::vector<float>& x, int64_t width, int s) {
  const int32_t begin = scene.query_start()[s], end = scene.query_start()[s + 1];
  return {x.begin() + begin * width, x.begin() + end * width};
}

class FoldedAttentionTest : public ::testing::TestWithParam<std::tuple<int, DType>> {
 protected:
  const Shape& shape() const { return kShapes[std::get<0>(GetParam())]; }
  DType dtype() const { return std::get<1>(GetParam()); }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(shape().head_dim)); }
  std::unique_ptr<Ops> generic_ = NewCpuOps(1, cpu::Isa::kGeneric);
};

// full (GQA, explicit identity maps) == PagedAttention bit for bit, == the reference, and the
// same bits on every ISA, thread count and batch composition.
TEST_P(FoldedAttentionTest, IdentityMapEqualsPagedAttention) {
  Scene scene(shape(), dtype(), 1);
  const int h = shape().num_heads, d = scene.d(), kv = h / 3 > 0 && h % 3 == 0 ? h / 3 : h / 2;
  const Layer layer = scene.MakeLayer(kv, kv);
  const std::vector<float> q = scene.Random(scene.rows() * h * d);
  const Maps maps = GqaMaps(scene.num_seqs(), h, 1, h / kv, h / kv);
  const std::vector<int32_t> score = FirstRow(maps.score, h), k = FirstRow(maps.k, h),
                             v = FirstRow(maps.v, h);
  const AttentionHeadMap map{score, k, v};
  const std::vector<float> got =
      RunFolded(*generic_, q, h, layer, layer, map, scene.batch(), h, d, scale());
  std::vector<float> paged(got.size());
  generic_->PagedAttention({const_cast<float*>(q.data()), DType::kF32, scene.rows(), h * d},
                           layer.cache, scene.batch(), h, scale(),
                           {paged.data(), DType::kF32, scene.rows(), h * d});
  EXPECT_EQ(got, paged);
  ExpectNear(got, Reference(scene, q, h, layer, layer, maps, h, scale()));
  ExpectSameOnEveryIsa(got, [&](Ops& ops) {
    return RunFolded(ops, q, h, layer, layer, map, scene.batch(), h, d, scale());
  });
  ExpectBatchInvariant(scene, got, h, [&](const AttentionBatch& alone, int s) {
    return RunFolded(*generic_, SeqRows(scene, q, h * d, s), h, layer, layer, {}, alone, h, d,
                     scale());
  });
}

// share: K (and the score heads, permuted) of a source layer, V of a layer that stores no K.
// Probabilities written by the source layer's call and read by the share call give the
// recomputed bits.
TEST_P(FoldedAttentionTest, ShareUsesSourceKAndOwnVAndCachedProbabilities) {
  Scene scene(shape(), dtype(), 2);
  const int h = shape().num_heads, d = scene.d(), kv = h % 3 == 0 ? h / 3 : h / 2, g = h / kv;
  const Layer source = scene.MakeLayer(kv, kv);
  const Layer shared = scene.MakeLayer(0, kv);
  const std::vector<float> q = scene.Random(scene.rows() * h * d);
  std::vector<int32_t> perm(h);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937 rng(3);
  std::shuffle(perm.begin(), perm.end(), rng);
  Maps maps;
  for (int s = 0; s < scene.num_seqs(); ++s) {
    for (int i = 0; i < h; ++i) {
      maps.score.push_back(perm[i]);
      maps.k.push_back(perm[i] / g);
      maps.v.push_back(i / g);
    }
  }
  const std::vector<int32_t> score = FirstRow(maps.score, h), k = FirstRow(maps.k, h);
  const AttentionHeadMap map{score, k, {}};
  const std::vector<float> recomputed =
      RunFolded(*generic_, q, h, source, shared, map, scene.batch(), h, d, scale());
  ExpectNear(recomputed, Reference(scene, q, h, source, shared, maps, h, scale()));

  const int max_context = *std::max_element(shape().context_len.begin(), shape().context_len.end());
  std::vector<float> p_buffer(scene.rows() * h * (max_context + 2), -1.0f);
  AttentionProbs probs{{p_buffer.data(), DType::kF32, scene.rows() * h, max_context + 2},
                       AttentionProbs::Mode::kWrite};
  const std::vector<float> full =
      RunFolded(*generic_, q, h, source, source, {}, scene.batch(), h, d, scale(), &probs);
  EXPECT_EQ(full, RunFolded(*generic_, q, h, source, source, {}, scene.batch(), h, d, scale()))
      << "writing probabilities changes nothing";
  // The stored rows are the source layer's softmax: they sum to 1 over the row's context.
  for (int s = 0; s < scene.num_seqs(); ++s) {
    for (int j = 0; j < shape().query_len[s]; ++j) {
      const int64_t row = scene.query_start()[s] + j;
      for (int i = 0; i < h; ++i) {
        const float* p = p_buffer.data() + (row * h + i) * (max_context + 2);
        double sum = 0;
        for (int t = 0; t <= scene.Position(s, j); ++t) sum += p[t];
        ASSERT_NEAR(sum, 1.0, 1e-5);
      }
    }
  }
  probs.mode = AttentionProbs::Mode::kRead;
  const Layer no_k = scene.MakeLayer(0, 1);  // K is not read: any layer will do
  EXPECT_EQ(RunFolded(*generic_, {}, h, no_k, shared, map, scene.batch(), h, d, scale(), &probs),
            recomputed)
      << "applying stored P must give the recomputed bits";
  ExpectSameOnEveryIsa(recomputed, [&](Ops& ops) {
    return RunFolded(ops, {}, h, no_k, shared, map, scene.batch(), h, d, scale(), &probs);
  });
  ExpectBatchInvariant(scene, recomputed, h, [&](const AttentionBatch& alone, int s) {
    return RunFolded(*generic_, SeqRows(scene, q, h * d, s), h, source, shared, map, alone, h, d,
                     scale());
  });
}

// cluster (CHAI): heads grouped per sequence; a group's representative (its lowest head) makes
// the scores against a compact K cache holding one head per cluster; every member mixes its own
// V. The grouped call gives the bits of one single-head call per output head.
TEST_P(FoldedAttentionTest, ClusterScoresOncePerRepresentativeWithPerSequenceMaps) {
  Scene scene(shape(), dtype(), 4);
  const int h = shape().num_heads, d = scene.d(), clusters = 3;
  const Layer layer = scene.MakeLayer(clusters, h);  // MHA V, K for the representatives only
  const std::vector<float> q = scene.Random(scene.rows() * h * d);
  std::mt19937 rng(5);
  Maps maps;
  for (int s = 0; s < scene.num_seqs(); ++s) {
    // Sequence-specific clusters: a random assignment with every cluster non-empty.
    std::vector<int32_t> cluster(h);
    for (int i = 0; i < h; ++i)
      cluster[i] = i < clusters ? i : static_cast<int32_t>(rng() % clusters);
    std::shuffle(cluster.begin(), cluster.end(), rng);
    for (int i = 0; i < h; ++i) {
      int rep = 0;
      while (cluster[rep] != cluster[i]) ++rep;
      maps.score.push_back(rep);
      maps.k.push_back(cluster[i]);
      maps.v.push_back(i);
    }
  }
  ASSERT_TRUE(scene.num_seqs() < 2 ||
              !std::equal(maps.score.begin(), maps.score.begin() + h, maps.score.begin() + h))
      << "the test wants maps that differ between sequences";
  const AttentionHeadMap map{maps.score, maps.k, {}};
  const std::vector<float> got =
      RunFolded(*generic_, q, h, layer, layer, map, scene.batch(), h, d, scale());
  ExpectNear(got, Reference(scene, q, h, layer, layer, maps, h, scale()));
  // One output head at a time (no sharing of P possible) gives the same bits.
  for (int i = 0; i < h; ++i) {
    std::vector<int32_t> score, k, v;
    for (int s = 0; s < scene.num_seqs(); ++s) {
      score.push_back(maps.score[s * h + i]);
      k.push_back(maps.k[s * h + i]);
      v.push_back(i);
    }
    const std::vector<float> one =
        RunFolded(*generic_, q, h, layer, layer, {score, k, v}, scene.batch(), 1, d, scale());
    for (int64_t r = 0; r < scene.rows(); ++r) {
      for (int j = 0; j < d; ++j) {
        ASSERT_EQ(one[r * d + j], got[(r * h + i) * d + j]) << "head " << i << " row " << r;
      }
    }
  }
  ExpectSameOnEveryIsa(got, [&](Ops& ops) {
    return RunFolded(ops, q, h, layer, layer, map, scene.batch(), h, d, scale());
  });
  ExpectBatchInvariant(scene, got, h, [&](const AttentionBatch& alone, int s) {
    const std::vector<int32_t> score(maps.score.begin() + s * h, maps.score.begin() + (s + 1) * h);
    const std::vector<int32_t> k(maps.k.begin() + s * h, maps.k.begin() + (s + 1) * h);
    return RunFolded(*generic_, SeqRows(scene, q, h * d, s), h, layer, layer, {score, k, {}}, alone,
                     h, d, scale());
  });
}

// kv_from: this layer's queries over another layer's K and V (GQA maps, empty spans).
TEST_P(FoldedAttentionTest, KvFromReadsAnotherLayersKAndV) {
  Scene scene(shape(), dtype(), 6);
  const int h = shape().num_heads, d = scene.d(), kv = 1;  // MQA source
  const Layer source = scene.MakeLayer(kv, kv);
  const std::vector<float> q = scene.Random(scene.rows() * h * d);
  const std::vector<float> got =
      RunFolded(*generic_, q, h, source, source, {}, scene.batch(), h, d, scale());
  ExpectNear(got, Reference(scene, q, h, source, source,
                            GqaMaps(scene.num_seqs(), h, 1, h / kv, h / kv), h, scale()));
}

INSTANTIATE_TEST_SUITE_P(Shapes, FoldedAttentionTest,
                         ::testing::Combine(::testing::Range(0, 6),
                                            ::testing::Values(DType::kF32, DType::kBF16)),
                         [](const auto& info) {
                           return "shape" + std::to_string(std::get<0>(info.param)) + "_" +
                                  std::string(DTypeName(std::get<1>(info.param)));
                         });

// A layer storing fewer K heads than V heads, and one storing none (k ignored, may be empty).
TEST(FoldedWriteKvTest, WritesCompactKAndVOnlyLayers) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  const int d = 4;
  Tensor k = ops->Allocate(DType::kF32, 6, 1 * d), v = ops->Allocate(DType::kF32, 6, 3 * d);
  const KvCacheLayer cache{k.view(), v.view(), 3, 1, 3, d};
  std::vector<float> kr(2 * d), vr(2 * 3 * d);
  std::iota(kr.begin(), kr.end(), 1.0f);
  std::iota(vr.begin(), vr.end(), 100.0f);
  const std::vector<int64_t> slots = {4, 1};
  AttentionBatch batch;
  batch.slot_mapping = slots;
  ops->WriteKv({kr.data(), DType::kF32, 2, d}, {vr.data(), DType::kF32, 2, 3 * d}, batch, cache);
  EXPECT_EQ(k.f32()[4 * d], 1.0f);
  EXPECT_EQ(k.f32()[1 * d + 3], kr[d + 3]);
  EXPECT_EQ(v.f32()[4 * 3 * d + 11], vr[11]);
  EXPECT_EQ(v.f32()[1 * 3 * d], vr[3 * d]);
  EXPECT_EQ(k.f32()[0], 0.0f) << "slot 0 untouched";

  Tensor v_only = ops->Allocate(DType::kBF16, 6, 3 * d);
  const KvCacheLayer no_k{{}, v_only.view(), 3, 0, 3, d};
  ops->WriteKv({}, {vr.data(), DType::kF32, 2, 3 * d}, batch, no_k);
  EXPECT_EQ(CacheValue(v_only.view(), 4 * 3 * d + 5), vr[5]);
}

// The kernel's own exp (softmax's exp(s - max), s - max <= 0): within 2 ulp-ish of libm over the
// range that matters, exactly 1 at 0, 0 far below, and lane-wise identical at every vector width.
TEST(VecMathTest, ExpNonPositiveIsAccurateAndWidthIndependent) {
  std::vector<float> xs = {0.0f,        -0.0f,  -1e-8f,   -0.5f,
                           -0.6931472f, -1.0f,  -10.0f,   -87.0f,
                           -87.3f,      -88.0f, -1000.0f, -std::numeric_limits<float>::infinity()};
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> dist(-90.0f, 0.0f);
  for (int i = 0; i < 4000; ++i) xs.push_back(dist(rng));
  while (xs.size() % 16 != 0) xs.push_back(dist(rng));
  for (float x : xs) {
    const float got = cpu::ExpNonPositive(x);
    if (x < -87.3f) {
      EXPECT_EQ(got, 0.0f) << x;
    } else {
      const double want = std::exp(static_cast<double>(x));
      EXPECT_NEAR(got, want, 3e-7 * want) << x;
    }
  }
  EXPECT_EQ(cpu::ExpNonPositive(0.0f), 1.0f);
  auto lanes = [&](auto width) {
    constexpr int W = decltype(width)::value;
    std::vector<float> out(xs.size());
    for (size_t i = 0; i < xs.size(); i += W) {
      cpu::FloatVec<W> x;
      std::memcpy(&x, &xs[i], sizeof(x));
      const cpu::FloatVec<W> e = cpu::ExpNonPositiveVec<W>(x);
      std::memcpy(&out[i], &e, sizeof(e));
    }
    return out;
  };
  std::vector<float> scalar;
  for (float x : xs) scalar.push_back(cpu::ExpNonPositive(x));
  EXPECT_EQ(lanes(std::integral_constant<int, 4>()), scalar);
  EXPECT_EQ(lanes(std::integral_constant<int, 8>()), scalar);
  EXPECT_EQ(lanes(std::integral_constant<int, 16>()), scalar);
}

// SumVec and DotVec keep numerics.h's Dot order at every width.
TEST(VecMathTest, SumAndDotMatchNumericsDotBitForBit) {
  std::mt19937 rng(10);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int n : {16, 32, 64, 128, 17, 40, 1000}) {
    std::vector<float> x(n), w(n), ones(n, 1.0f);
    for (float& f : x) f = dist(rng);
    for (float& f : w) f = dist(rng);
    const float sum = cpu::Dot(x.data(), ones.data(), n, cpu::LoadF32());
    EXPECT_EQ(cpu::SumVec<4>(x.data(), n), sum) << n;
    EXPECT_EQ(cpu::SumVec<8>(x.data(), n), sum) << n;
    EXPECT_EQ(cpu::SumVec<16>(x.data(), n), sum) << n;
    if (n % 16 == 0) {
      const float dot = cpu::Dot(x.data(), w.data(), n, cpu::LoadF32());
      EXPECT_EQ(cpu::DotVec<4>(x.data(), w.data(), n, cpu::LoadF32()), dot) << n;
      EXPECT_EQ(cpu::DotVec<8>(x.data(), w.data(), n, cpu::LoadF32()), dot) << n;
      EXPECT_EQ(cpu::DotVec<16>(x.data(), w.data(), n, cpu::LoadF32()), dot) << n;
    }
  }
}

TEST(FoldedAttentionDeathTest, RejectsBadMaps) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Shape shape{4, 8, 2, {3}, {1}};
  Scene scene(shape, DType::kF32, 7);
  const Layer layer = scene.MakeLayer(2, 4);
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  const std::vector<float> q = scene.Random(4 * 8);
  const std::vector<int32_t> bad_k = {0, 1, 2, 1}, short_map = {0, 1};
  EXPECT_DEATH(RunFolded(*ops, q, 4, layer, layer, {{}, bad_k, {}}, scene.batch(), 4, 8, 1.0f),
               "k_head\\[0\\]\\[2\\] = 2 outside \\[0, 2\\)");
  EXPECT_DEATH(RunFolded(*ops, q, 4, layer, layer, {short_map, {}, {}}, scene.batch(), 4, 8, 1.0f),
               "score_head has 2 entries");
  const Layer v_only = scene.MakeLayer(0, 4);
  EXPECT_DEATH(RunFolded(*ops, q, 4, v_only, v_only, {}, scene.batch(), 4, 8, 1.0f),
               "the layer stores no heads");
}

}  // namespace
}  // namespace kvfold
