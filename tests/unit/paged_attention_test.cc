// WriteKv + PagedAttention against naive causal attention over contiguous per-sequence K/V. The
// cache uses scrambled block ids and sequences whose queries start mid-context (a prefill chunk
// over a cached prefix), so an indexing slip anywhere changes the result by O(1).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"

namespace kvfold {
namespace {

struct Case {
  int num_heads, num_kv_heads, head_dim, block_size;
  std::vector<int> context_len, query_len;
};

class PagedAttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(PagedAttentionTest, MatchesNaiveCausalAttention) {
  const Case& c = GetParam();
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
  Tensor k_cache = ops->Allocate(DType::kF32, slots, kv_width);
  Tensor v_cache = ops->Allocate(DType::kF32, slots, kv_width);
  KvCacheLayer cache{k_cache.view(), v_cache.view(), c.block_size, c.num_kv_heads, c.head_dim};

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
    ::testing::Values(Case{1, 1, 1, 1, {1}, {1}},                   // everything 1
                      Case{4, 4, 8, 4, {5, 9}, {5, 1}},             // MHA, prefill + decode
                      Case{8, 2, 16, 16, {40, 3, 17}, {40, 3, 1}},  // GQA, several blocks
                      Case{6, 1, 5, 3, {11, 7}, {4, 7}},            // MQA, odd head dim, chunk
                      Case{8, 4, 8, 16, {100, 37, 64, 1}, {1, 37, 10, 1}}),  // mixed step
    [](const auto& info) { return "case" + std::to_string(info.index); });

}  // namespace
}  // namespace kvfold
