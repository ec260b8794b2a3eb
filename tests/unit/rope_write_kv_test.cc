// Ops::RopeWriteKv's default (the CPU backend's) against the calls it stands for: Rope(q),
// Rope(k), WriteKv(k, v), bit for bit, for F32 and BF16 caches, a V-only layer and padding rows.
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"

namespace kvfold {
namespace {

struct Shape {
  int q_heads;
  int k_heads;  // 0: a layer that stores V only
  int v_heads;
  int head_dim;
  DType cache_dtype;
};

std::vector<float> Random(std::mt19937& rng, size_t n) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> CosSinTable(int max_positions, int head_dim) {
  std::vector<float> table(static_cast<size_t>(max_positions) * head_dim);
  for (int p = 0; p < max_positions; ++p) {
    for (int i = 0; i < head_dim / 2; ++i) {
      const double angle = p * std::pow(10000.0, -2.0 * i / head_dim);
      table[p * head_dim + i] = static_cast<float>(std::cos(angle));
      table[p * head_dim + head_dim / 2 + i] = static_cast<float>(std::sin(angle));
    }
  }
  return table;
}

bool SameBytes(const TensorView& a, const TensorView& b) {
  return a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.data, b.data, a.nbytes()) == 0);
}

class RopeWriteKvTest : public ::testing::TestWithParam<Shape> {};

TEST_P(RopeWriteKvTest, DefaultEqualsRopeRopeWriteKv) {
  const Shape s = GetParam();
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  std::mt19937 rng(s.q_heads * 100 + s.k_heads * 10 + s.head_dim);
  const int32_t block_size = 4, num_blocks = 5, max_positions = 40;
  // Row 2 is padding (slot -1): it is rotated but stores nothing.
  const std::vector<int32_t> positions = {0, 39, 5, 17, 17, 3};
  const std::vector<int64_t> slots = {7, 19, -1, 0, 12, 3};
  const auto n = static_cast<int64_t>(positions.size());
  const std::vector<int32_t> query_start = {0, static_cast<int32_t>(n)};
  const std::vector<int32_t> context_len = {40};
  AttentionBatch batch;
  batch.query_start = query_start;
  batch.context_len = context_len;
  batch.slot_mapping = slots;

  std::vector<float> table = CosSinTable(max_positions, s.head_dim);
  const RopeTable rope{{table.data(), DType::kF32, max_positions, s.head_dim}};
  const std::vector<float> q0 = Random(rng, n * s.q_heads * s.head_dim);
  const std::vector<float> k0 = Random(rng, n * s.k_heads * s.head_dim);
  std::vector<float> v = Random(rng, n * s.v_heads * s.head_dim);
  const TensorView v_view{v.data(), DType::kF32, n, int64_t{s.v_heads} * s.head_dim};

  struct Side {
    std::vector<float> q, k;
    Tensor k_cache, v_cache;
    KvCacheLayer layer;
  };
  auto make_side = [&] {
    Side side{q0, k0, {}, {}, {}};
    const int64_t slots_total = int64_t{num_blocks} * block_size;
    if (s.k_heads > 0) {
      side.k_cache = ops->Allocate(s.cache_dtype, slots_total, int64_t{s.k_heads} * s.head_dim);
    }
    side.v_cache = ops->Allocate(s.cache_dtype, slots_total, int64_t{s.v_heads} * s.head_dim);
    side.layer = {s.k_heads > 0 ? side.k_cache.view() : TensorView{nullptr, s.cache_dtype, 0, 0},
                  side.v_cache.view(),
                  block_size,
                  s.k_heads,
                  s.v_heads,
                  s.head_dim};
    return side;
  };
  Side fused = make_side(), separate = make_side();
  auto q_view = [&](Side& side) {
    return TensorView{side.q.data(), DType::kF32, n, int64_t{s.q_heads} * s.head_dim};
  };
  auto k_view = [&](Side& side) {
    return TensorView{side.k.data(), DType::kF32, n, int64_t{s.k_heads} * s.head_dim};
  };

  ops->RopeWriteKv(q_view(fused), s.q_heads, k_view(fused), v_view, s.head_dim, positions, rope,
                   batch, fused.layer);
  ops->Rope(q_view(separate), s.q_heads, s.head_dim, positions, rope);
  if (s.k_heads > 0) ops->Rope(k_view(separate), s.k_heads, s.head_dim, positions, rope);
  ops->WriteKv(k_view(separate), v_view, batch, separate.layer);

  EXPECT_TRUE(SameBytes(q_view(fused), q_view(separate)));
  EXPECT_TRUE(SameBytes(k_view(fused), k_view(separate)));
  EXPECT_TRUE(SameBytes(fused.layer.v, separate.layer.v));
  if (s.k_heads > 0) {
    EXPECT_TRUE(SameBytes(fused.layer.k, separate.layer.k));
  }
  // Not vacuous: q and k were rotated, slot 7 was written, and slots no row maps to (nor the
  // padding row) stayed zero.
  EXPECT_NE(fused.q, q0);
  if (s.k_heads > 0) {
    EXPECT_NE(fused.k, k0);
  }
  const TensorView written = fused.layer.v.Rows(7, 1);
  const std::vector<char> zeros(written.nbytes(), 0);
  EXPECT_NE(std::memcmp(written.data, zeros.data(), zeros.size()), 0);
  for (int64_t slot : {1, 2, 4, 5, 6}) {
    const TensorView untouched = fused.layer.v.Rows(slot, 1);
    EXPECT_EQ(std::memcmp(untouched.data, zeros.data(), zeros.size()), 0) << "slot " << slot;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeWriteKvTest,
                         ::testing::Values(Shape{4, 2, 2, 8, DType::kF32},
                                           Shape{3, 1, 1, 6, DType::kBF16},
                                           Shape{5, 3, 5, 16, DType::kF32},
                                           Shape{7, 0, 7, 4, DType::kBF16}));

}  // namespace
}  // namespace kvfold
