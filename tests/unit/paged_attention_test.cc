// WriteKv + PagedAttention against naive causal attention over contiguous per-sequence K/V. The
// cache uses scrambled block ids and sequences whose queries start mid-context (a prefill chunk
// over a cached prefix), so an indexing slip anywhere changes the result by O(1). Every shape runs
// with F32 and BF16 caches; for BF16 the reference attends over the BF16-rounded K/V, so the
// tolerance is the F32 one (the rounding is in the stored values, not in the arithmetic).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/numerics.h"

namespace kvfold {
namespace {

struct Case {
  int num_heads, num_kv_heads, head_dim, block_size;
  std::vector<int> context_len, query_len;
};

class PagedAttentionTest : public ::testing::TestWithParam<std::tuple<Case, DType>> {};

// What a cache of `dtype` holds for x.
float Stored(float x, DType dtype) {
  return dtype == DType::kBF16 ? cpu::Bf16ToF32(cpu::F32ToBf16(x)) : x;
}

// The F32 value of cache element i.
float CacheValue(const TensorView& t, int64_t i) {
  return t.dtype == DType::kBF16 ? cpu::Bf16ToF32(static_cast<const uint16_t*>(t.data)[i])
                                 : t.f32()[i];
}

TEST_P(PagedAttentionTest, MatchesNaiveCausalAttention) {
  const Case& c = std::get<0>(GetParam());
  const DType dtype = std::get<1>(GetParam());
  std::unique_ptr<Ops> ops = NewCpuOps(2);
  std::mt19937 rng(42);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int num_seqs = static_cast<int>(c.context_len.size());
  const int kv_width = c.num_kv_heads * c.head_dim, q_width = c.num_heads * c.head_dim;

  int max_blocks = 0, total_blocks = 0;
  for (int len : c.context_len) {
    const int b = (len + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, b);
    total_blocks += b;
  }
  // Scrambled block ids: block tables must be followed, not assumed contiguous.
  std::vector<int32_t> ids(total_blocks + 3);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> tables(num_seqs * max_blocks, 0);
  for (int s = 0, next = 0; s < num_seqs; ++s) {
    for (int b = 0; b < (c.context_len[s] + c.block_size - 1) / c.block_size; ++b) {
      tables[s * max_blocks + b] = ids[next++];
    }
  }
  const int64_t slots = static_cast<int64_t>(ids.size()) * c.block_size;
  Tensor k_cache = ops->Allocate(dtype, slots, kv_width);
  Tensor v_cache = ops->Allocate(dtype, slots, kv_width);
  KvCacheLayer cache{k_cache.view(), v_cache.view(), c.block_size,
                     c.num_kv_heads, c.num_kv_heads, c.head_dim};

  // Full K/V per sequence; the cached prefix is written first, then this step's rows.
  std::vector<std::vector<float>> k_full(num_seqs), v_full(num_seqs);
  std::vector<int32_t> query_start = {0}, context_len, prefix_slots_seq;
  std::vector<int64_t> step_slots, prefix_slots;
  std::vector<float> step_k, step_v, prefix_k, prefix_v;
  auto slot_of = [&](int s, int pos) {
    return int64_t{tables[s * max_blocks + pos / c.block_size]} * c.block_size + pos % c.block_size;
  };
  for (int s = 0; s < num_seqs; ++s) {
    const int len = c.context_len[s], q_len = c.query_len[s];
    k_full[s].resize(len * kv_width);
    v_full[s].resize(len * kv_width);
    for (float& x : k_full[s]) x = dist(rng);
    for (float& x : v_full[s]) x = dist(rng);
    for (int p = 0; p < len; ++p) {
      const bool in_step = p >= len - q_len;
      auto& ks = in_step ? step_k : prefix_k;
      auto& vs = in_step ? step_v : prefix_v;
      ks.insert(ks.end(), k_full[s].begin() + p * kv_width, k_full[s].begin() + (p + 1) * kv_width);
      vs.insert(vs.end(), v_full[s].begin() + p * kv_width, v_full[s].begin() + (p + 1) * kv_width);
      (in_step ? step_slots : prefix_slots).push_back(slot_of(s, p));
    }
    query_start.push_back(query_start.back() + q_len);
    context_len.push_back(len);
  }
  const int64_t n = query_start.back();
  AttentionBatch prefix_batch;
  prefix_batch.slot_mapping = prefix_slots;
  const int64_t n_prefix = static_cast<int64_t>(prefix_slots.size());
  if (n_prefix > 0) {
    ops->WriteKv({prefix_k.data(), DType::kF32, n_prefix, kv_width},
                 {prefix_v.data(), DType::kF32, n_prefix, kv_width}, prefix_batch, cache);
  }
  AttentionBatch batch{query_start, context_len, tables, max_blocks, step_slots};
  ops->WriteKv({step_k.data(), DType::kF32, n, kv_width}, {step_v.data(), DType::kF32, n, kv_width},
               batch, cache);

  std::vector<float> q(n * q_width), out(n * q_width);
  for (float& x : q) x = dist(rng);
  // WriteKv stored every row in the cache's dtype, rounded to nearest even; the reference below
  // attends over exactly those values.
  for (int s = 0; s < num_seqs; ++s) {
    for (int p = 0; p < c.context_len[s]; ++p) {
      for (int i = 0; i < kv_width; ++i) {
        float& kf = k_full[s][p * kv_width + i];
        float& vf = v_full[s][p * kv_width + i];
        kf = Stored(kf, dtype);
        vf = Stored(vf, dtype);
        ASSERT_EQ(CacheValue(cache.k, slot_of(s, p) * kv_width + i), kf);
        ASSERT_EQ(CacheValue(cache.v, slot_of(s, p) * kv_width + i), vf);
      }
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  ops->PagedAttention({q.data(), DType::kF32, n, q_width}, cache, batch, c.num_heads, scale,
                      {out.data(), DType::kF32, n, q_width});

  const int group = c.num_heads / c.num_kv_heads;
  for (int s = 0; s < num_seqs; ++s) {
    for (int j = 0; j < c.query_len[s]; ++j) {
      const int64_t row = query_start[s] + j;
      const int pos = c.context_len[s] - c.query_len[s] + j;
      for (int h = 0; h < c.num_heads; ++h) {
        const int kvh = h / group;
        std::vector<double> p(pos + 1);
        double max_score = -1e300, denom = 0;
        for (int t = 0; t <= pos; ++t) {
          double dot = 0;
          for (int i = 0; i < c.head_dim; ++i) {
            dot += double(q[row * q_width + h * c.head_dim + i]) *
                   k_full[s][t * kv_width + kvh * c.head_dim + i];
          }
          p[t] = dot * scale;
          max_score = std::max(max_score, p[t]);
        }
        for (double& x : p) denom += (x = std::exp(x - max_score));
        for (int i = 0; i < c.head_dim; ++i) {
          double want = 0;
          for (int t = 0; t <= pos; ++t)
            want += p[t] * v_full[s][t * kv_width + kvh * c.head_dim + i];
          want /= denom;
          ASSERT_NEAR(out[row * q_width + h * c.head_dim + i], want, 1e-5 + 1e-4 * std::abs(want))
              << "seq " << s << " row " << j << " head " << h << " dim " << i;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttentionTest,
    ::testing::Combine(
        ::testing::Values(Case{1, 1, 1, 1, {1}, {1}},                   // everything 1
                          Case{4, 4, 8, 4, {5, 9}, {5, 1}},             // MHA, prefill + decode
                          Case{8, 2, 16, 16, {40, 3, 17}, {40, 3, 1}},  // GQA, several blocks
                          Case{6, 1, 5, 3, {11, 7}, {4, 7}},            // MQA, odd head dim, chunk
                          Case{8, 4, 8, 16, {100, 37, 64, 1}, {1, 37, 10, 1}}),  // mixed step
        ::testing::Values(DType::kF32, DType::kBF16)),
    [](const auto& info) {
      return "case" + std::to_string(info.index / 2) + "_" +
             std::string(DTypeName(std::get<1>(info.param)));
    });

// Round to nearest even at the halfway point, NaN kept, and the cache read back exactly.
TEST(Bf16KvCacheTest, WriteKvRoundsToNearestEven) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  // 1 + 2^-8 is halfway between BF16 1 and 1 + 2^-7: ties go to the even mantissa (1);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
  std::vector<float> k = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -2.5f, std::nanf("")};
  std::vector<float> v = {0.0f, -0.0f, 1e30f, 3.0f};
  Tensor kc = ops->Allocate(DType::kBF16, 2, 4), vc = ops->Allocate(DType::kBF16, 2, 4);
  const KvCacheLayer cache{kc.view(), vc.view(), 2, 1, 1, 4};
  const std::vector<int64_t> slots = {1};
  AttentionBatch batch;
  batch.slot_mapping = slots;
  ops->WriteKv({k.data(), DType::kF32, 1, 4}, {v.data(), DType::kF32, 1, 4}, batch, cache);
  EXPECT_EQ(CacheValue(cache.k, 4), 1.0f);
  EXPECT_EQ(CacheValue(cache.k, 5), 1.0f + 0x1p-6f);
  EXPECT_EQ(CacheValue(cache.k, 6), -2.5f);
  EXPECT_TRUE(std::isnan(CacheValue(cache.k, 7)));
  EXPECT_EQ(CacheValue(cache.v, 6), cpu::Bf16ToF32(cpu::F32ToBf16(1e30f)));
  EXPECT_EQ(CacheValue(cache.k, 0), 0.0f) << "slot 0 untouched";
}

}  // namespace
}  // namespace kvfold
