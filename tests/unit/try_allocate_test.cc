// Out of device memory is a Status, not a crash: KvCache::Create and LlamaModel::Load on ops whose
// TryAllocate runs out (the CPU backend behind a budget of allocations), and Ops::TryAllocate's
// default.
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "worker/kv_cache.h"

namespace kvfold {
namespace {

// The CPU backend, except that TryAllocate fails as a full device does once `budget`
// allocations have succeeded.
class BudgetOps final : public Ops {
 public:
  explicit BudgetOps(int budget) : inner_(NewCpuOps(1)), budget_(budget) {}

  Device device() const override { return inner_->device(); }
  std::string_view name() const override { return "budget"; }
  Tensor Allocate(DType dtype, int64_t rows, int64_t cols) override {
    return inner_->Allocate(dtype, rows, cols);
  }
  absl::StatusOr<Tensor> TryAllocate(DType dtype, int64_t rows, int64_t cols) override {
    ++tries_;
    if (budget_ == 0) return absl::ResourceExhaustedError("test device: out of memory");
    --budget_;
    return inner_->Allocate(dtype, rows, cols);
  }
  void CopyFromHost(const void* src, TensorView dst) override { inner_->CopyFromHost(src, dst); }
  void CopyToHost(const TensorView& src, void* dst) override { inner_->CopyToHost(src, dst); }
  void Embedding(absl::Span<const int32_t> ids, const TensorView& table, TensorView out) override {
    inner_->Embedding(ids, table, out);
  }
  void RmsNorm(const TensorView& x, const TensorView& w, float eps, TensorView out) override {
    inner_->RmsNorm(x, w, eps, out);
  }
  void MatMul(const TensorView& x, const TensorView& w, const TensorView* bias,
              TensorView out) override {
    inner_->MatMul(x, w, bias, out);
  }
  void Rope(TensorView x, int num_heads, int head_dim, absl::Span<const int32_t> positions,
            const RopeTable& table) override {
    inner_->Rope(x, num_heads, head_dim, positions, table);
  }
  void WriteKv(const TensorView& k, const TensorView& v, const AttentionBatch& batch,
               const KvCacheLayer& cache) override {
    inner_->WriteKv(k, v, batch, cache);
  }
  void FoldedPagedAttention(const TensorView& q, const KvCacheLayer& k_layer,
                            const KvCacheLayer& v_layer, const AttentionHeadMap& heads,
                            const AttentionBatch& batch, int num_heads, float scale, TensorView out,
                            const AttentionProbs* probs) override {
    inner_->FoldedPagedAttention(q, k_layer, v_layer, heads, batch, num_heads, scale, out, probs);
  }
  void SiluMul(const TensorView& gate, const TensorView& up, TensorView out) override {
    inner_->SiluMul(gate, up, out);
  }
  void Add(TensorView x, const TensorView& y) override { inner_->Add(x, y); }
  void GatherRows(const TensorView& x, absl::Span<const int32_t> rows, TensorView out) override {
    inner_->GatherRows(x, rows, out);
  }

  int tries() const { return tries_; }

 private:
  std::unique_ptr<Ops> inner_;
  int budget_;
  int tries_ = 0;
};

TEST(TryAllocateTest, DefaultAllocatesZeroedTensors) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  absl::StatusOr<Tensor> t = ops->TryAllocate(DType::kF32, 3, 5);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->rows(), 3);
  EXPECT_EQ(t->cols(), 5);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(t->f32()[i], 0.0f);
}

TEST(KvCacheCreateTest, RejectsBadArgumentsWithStatus) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  const std::vector<KvLayerShape> shapes = {{2, 2, 8}};
  EXPECT_EQ(KvCache::Create(*ops, shapes, 0, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create(*ops, shapes, 4, 16, DType::kF16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create(*ops, {{2, 2, 0}}, 4, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheCreateTest, AllocatesEveryStoredArray) {
  BudgetOps ops(100);
  // full, V only (share), nothing (drop).
  absl::StatusOr<KvCache> cache =
      KvCache::Create(ops, {{2, 2, 8}, {0, 2, 8}, {0, 0, 8}}, 3, 4, DType::kBF16);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(ops.tries(), 3);
  EXPECT_EQ(cache->layer(0).k.rows, 12);
  EXPECT_EQ(cache->layer(0).k.cols, 16);
  EXPECT_EQ(cache->layer(1).k.data, nullptr);
  EXPECT_EQ(cache->layer(1).v.dtype, DType::kBF16);
  EXPECT_EQ(cache->layer(2).v.data, nullptr);
}

TEST(KvCacheCreateTest, PoolThatDoesNotFitIsResourceExhausted) {
  BudgetOps ops(2);  // room for layer 0's K and V, not layer 1's
  absl::StatusOr<KvCache> cache = KvCache::Create(ops, {{2, 2, 8}, {2, 2, 8}}, 3, 4);
  ASSERT_EQ(cache.status().code(), absl::StatusCode::kResourceExhausted) << cache.status();
  // The message says which pool, and how big: 2 layers x 4 heads x 8 x 4 bytes x 12 slots.
  EXPECT_NE(cache.status().message().find("KV cache of 3 blocks (3072 bytes"), std::string::npos)
      << cache.status();
  EXPECT_NE(cache.status().message().find("test device: out of memory"), std::string::npos);
}

TEST(LoadTest, WeightsThatDoNotFitAreResourceExhausted) {
  // On the CPU the matrices are views into the mapping; the norms (and the RoPE table) are
  // allocated, so a budget of 3 runs out while loading the first layers.
  BudgetOps ops(3);
  absl::StatusOr<std::unique_ptr<LlamaModel>> model =
      testing::LoadModel(testing::StoriesPath(), ops);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted) << model.status();
  EXPECT_EQ(ops.tries(), 4);
}

}  // namespace
}  // namespace kvfold
