// CudaOps::RopeWriteKv (one kernel) against the calls it fuses, Rope(q) + Rope(k) + WriteKv, on
// the CUDA backend and on the CPU reference: q, k and both caches bit for bit, for F32 and BF16
// caches, odd head counts, V-only layers and padding rows (negative slots store nothing); and the
// same bits when its positions and slots come from step staging, eager or replayed in a step graph
// with the next step's values.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/gpu/backend_pair.h"

namespace kvfold {
namespace {

using testing::RandomArray;
using testing::TensorPair;

struct Shape {
  int q_heads;
  int k_heads;  // 0: a layer that stores V only
  int v_heads;
  int head_dim;
  DType cache_dtype;
};

constexpr int32_t kBlockSize = 8, kNumBlocks = 16, kMaxPositions = 300;
constexpr int64_t kSlots = int64_t{kBlockSize} * kNumBlocks;

// One step's token placement: positions, cache slots (every fifth row padding) and the batch
// that carries them (one sequence; only the slots matter to the ops under test).
struct Step {
  std::vector<int32_t> positions;
  std::vector<int64_t> slots;
  std::vector<int32_t> query_start, context_len;

  Step(std::mt19937& rng, int32_t rows) {
    std::vector<int64_t> pool(kSlots);
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    std::uniform_int_distribution<int32_t> pos(0, kMaxPositions - 1);
    for (int32_t r = 0; r < rows; ++r) {
      positions.push_back(pos(rng));
      slots.push_back(r % 5 == 2 ? -1 : pool[r]);
    }
    query_start = {0, rows};
    context_len = {rows};
  }
  AttentionBatch Batch() const {
    AttentionBatch b;
    b.query_start = query_start;
    b.context_len = context_len;
    b.slot_mapping = slots;
    return b;
  }
};

std::vector<float> CosSinTable(int head_dim) {
  std::vector<float> table(static_cast<size_t>(kMaxPositions) * head_dim);
  for (int p = 0; p < kMaxPositions; ++p) {
    for (int i = 0; i < head_dim / 2; ++i) {
      const double angle = p * std::pow(10000.0, -2.0 * i / head_dim);
      table[p * head_dim + i] = static_cast<float>(std::cos(angle));
      table[p * head_dim + head_dim / 2 + i] = static_cast<float>(std::sin(angle));
    }
  }
  return table;
}

std::vector<uint8_t> Bytes(Ops& ops, const TensorView& t) {
  std::vector<uint8_t> out(t.nbytes());
  ops.CopyToHost(t, out.data());
  return out;
}

// q, k, v and a zeroed cache layer on one backend.
struct Layer {
  Tensor q, k, v, k_cache, v_cache;
  KvCacheLayer cache;
};

class CudaRopeWriteKvTest : public testing::BackendPairTest,
                            public ::testing::WithParamInterface<Shape> {
 protected:
  // Fresh copies of `inputs` (q, k, v) and an empty cache on `ops`.
  Layer MakeLayer(Ops& ops, const std::vector<testing::HostArray>& inputs) {
    const Shape s = GetParam();
    Layer l;
    Tensor* targets[] = {&l.q, &l.k, &l.v};
    for (int i = 0; i < 3; ++i) {
      *targets[i] = ops.Allocate(DType::kF32, inputs[i].rows, inputs[i].cols);
      ops.CopyFromHost(inputs[i].bytes.data(), targets[i]->view());
    }
    if (s.k_heads > 0) l.k_cache = ops.Allocate(s.cache_dtype, kSlots, inputs[1].cols);
    l.v_cache = ops.Allocate(s.cache_dtype, kSlots, inputs[2].cols);
    l.cache = {s.k_heads > 0 ? l.k_cache.view() : TensorView{nullptr, s.cache_dtype, 0, 0},
               l.v_cache.view(),
               kBlockSize,
               s.k_heads,
               s.v_heads,
               s.head_dim};
    return l;
  }
  // Rewrites `l`'s q, k and v with `inputs` and zeroes its cache, in place.
  void Reset(Layer& l, const std::vector<testing::HostArray>& inputs) {
    gpu_->CopyFromHost(inputs[0].bytes.data(), l.q.view());
    gpu_->CopyFromHost(inputs[1].bytes.data(), l.k.view());
    gpu_->CopyFromHost(inputs[2].bytes.data(), l.v.view());
    for (const TensorView& c : {l.cache.k, l.cache.v}) {
      const std::vector<uint8_t> zeros(c.nbytes(), 0);
      gpu_->CopyFromHost(zeros.data(), c);
    }
  }
  std::vector<testing::HostArray> Inputs(std::mt19937& rng, int32_t rows) {
    const Shape s = GetParam();
    return {RandomArray(rng, DType::kF32, rows, int64_t{s.q_heads} * s.head_dim),
            RandomArray(rng, DType::kF32, rows, int64_t{s.k_heads} * s.head_dim),
            RandomArray(rng, DType::kF32, rows, int64_t{s.v_heads} * s.head_dim)};
  }
  void Fused(Ops& ops, Layer& l, const Step& step, const TensorView& table) {
    const Shape s = GetParam();
    ops.RopeWriteKv(l.q.view(), s.q_heads, l.k.view(), l.v.view(), s.head_dim, step.positions,
                    RopeTable{table}, step.Batch(), l.cache);
  }
  void Separate(Ops& ops, Layer& l, const Step& step, const TensorView& table) {
    const Shape s = GetParam();
    ops.Rope(l.q.view(), s.q_heads, s.head_dim, step.positions, RopeTable{table});
    if (s.k_heads > 0)
      ops.Rope(l.k.view(), s.k_heads, s.head_dim, step.positions, RopeTable{table});
    ops.WriteKv(l.k.view(), l.v.view(), step.Batch(), l.cache);
  }
  // Every array of `a` (on ops_a) equals `b`'s (on ops_b), byte for byte.
  void ExpectSameBits(Ops& ops_a, const Layer& a, Ops& ops_b, const Layer& b) {
    EXPECT_EQ(Bytes(ops_a, a.q.view()), Bytes(ops_b, b.q.view())) << "q";
    EXPECT_EQ(Bytes(ops_a, a.k.view()), Bytes(ops_b, b.k.view())) << "k";
    EXPECT_EQ(Bytes(ops_a, a.cache.k), Bytes(ops_b, b.cache.k)) << "k cache";
    EXPECT_EQ(Bytes(ops_a, a.cache.v), Bytes(ops_b, b.cache.v)) << "v cache";
  }
};

TEST_P(CudaRopeWriteKvTest, FusedGivesTheSeparateOpsBits) {
  const Shape s = GetParam();
  std::mt19937 rng(s.q_heads * 1000 + s.k_heads * 100 + s.head_dim);
  const TensorPair table =
      Upload(testing::MakeArray(DType::kF32, kMaxPositions, s.head_dim, CosSinTable(s.head_dim)));
  const Step step(rng, 37);
  const std::vector<testing::HostArray> inputs = Inputs(rng, 37);
  Layer fused = MakeLayer(*gpu_, inputs), separate = MakeLayer(*gpu_, inputs);
  Layer reference = MakeLayer(*cpu_, inputs);
  Fused(*gpu_, fused, step, table.gpu.view());
  Separate(*gpu_, separate, step, table.gpu.view());
  Separate(*cpu_, reference, step, table.cpu.view());
  ExpectSameBits(*gpu_, fused, *gpu_, separate);
  // Each rotated element is a*cos - b*sin with every operation rounded (no FMA) on both backends.
  ExpectSameBits(*gpu_, fused, *cpu_, reference);

  // Not vacuous: the rows moved, and exactly the non-padding rows' slots were written.
  EXPECT_NE(Bytes(*gpu_, fused.q.view()), inputs[0].bytes);
  const std::vector<uint8_t> v_cache = Bytes(*gpu_, fused.cache.v);
  const size_t row_bytes = fused.cache.v.row_bytes();
  for (int64_t slot = 0; slot < kSlots; ++slot) {
    const bool written = std::find(step.slots.begin(), step.slots.end(), slot) != step.slots.end();
    const auto row = v_cache.begin() + slot * row_bytes;
    EXPECT_EQ(std::any_of(row, row + row_bytes, [](uint8_t b) { return b != 0; }), written)
        << "slot " << slot;
  }
}

TEST_P(CudaRopeWriteKvTest, StagedPositionsAndSlotsGiveTheSameBits) {
  const Shape s = GetParam();
  std::mt19937 rng(s.q_heads * 1000 + s.k_heads * 100 + s.head_dim + 1);
  const TensorPair table =
      Upload(testing::MakeArray(DType::kF32, kMaxPositions, s.head_dim, CosSinTable(s.head_dim)));
  const Step step(rng, 21);
  const std::vector<testing::HostArray> inputs = Inputs(rng, 21);
  Layer staged = MakeLayer(*gpu_, inputs), unstaged = MakeLayer(*gpu_, inputs);
  const AttentionBatch batch = step.Batch();
  const HostArray arrays[] = {HostArray::Of(absl::MakeConstSpan(step.positions))};
  gpu_->StageStepInputs(arrays, &batch, Ops::kEagerRegion);
  Fused(*gpu_, staged, step, table.gpu.view());
  gpu_->EndStep();
  Separate(*gpu_, unstaged, step, table.gpu.view());
  ExpectSameBits(*gpu_, staged, *gpu_, unstaged);
}

// A step graph records the kernel reading the staged region; each replay rereads it, so a step
// staged after the capture runs with its own positions and slots.
TEST_P(CudaRopeWriteKvTest, StepGraphReplaysTheNextStepsPositionsAndSlots) {
  const Shape s = GetParam();
  std::mt19937 rng(s.q_heads * 1000 + s.k_heads * 100 + s.head_dim + 2);
  const TensorPair table =
      Upload(testing::MakeArray(DType::kF32, kMaxPositions, s.head_dim, CosSinTable(s.head_dim)));
  constexpr int32_t kRows = 9;
  constexpr int64_t kGraph = 3;
  const std::vector<testing::HostArray> inputs = Inputs(rng, kRows);
  Layer graph = MakeLayer(*gpu_, inputs);
  // Positions and slot mapping live in these host arrays; each step rewrites them in place.
  Step current(rng, kRows);
  const AttentionBatch batch = current.Batch();
  const HostArray arrays[] = {HostArray::Of(absl::MakeConstSpan(current.positions))};

  gpu_->StageStepInputs(arrays, &batch, kGraph);
  Fused(*gpu_, graph, current, table.gpu.view());  // eager first, as the capture rules ask
  ASSERT_TRUE(gpu_->BeginStepCapture(kGraph).ok());
  Fused(*gpu_, graph, current, table.gpu.view());
  ASSERT_TRUE(gpu_->EndStepCapture(kGraph).ok());
  gpu_->EndStep();

  for (int replay = 0; replay < 2; ++replay) {
    SCOPED_TRACE(::testing::Message() << "replay " << replay);
    const Step next(rng, kRows);
    // The same host addresses, the next step's values.
    std::copy(next.positions.begin(), next.positions.end(), current.positions.begin());
    std::copy(next.slots.begin(), next.slots.end(), current.slots.begin());
    Reset(graph, inputs);  // the graph's buffers, back to the inputs and an empty cache
    Layer fresh = MakeLayer(*gpu_, inputs);
    gpu_->StageStepInputs(arrays, &batch, kGraph);
    ASSERT_TRUE(gpu_->HasStepGraph(kGraph));
    ASSERT_TRUE(gpu_->ReplayStepGraph(kGraph).ok());
    gpu_->EndStep();
    Separate(*gpu_, fresh, current, table.gpu.view());
    ExpectSameBits(*gpu_, graph, *gpu_, fresh);
  }
  gpu_->DropStepGraphs();
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaRopeWriteKvTest,
                         ::testing::Values(Shape{1, 1, 1, 2, DType::kF32},
                                           Shape{5, 1, 1, 64, DType::kF32},
                                           Shape{7, 3, 7, 32, DType::kBF16},  // cluster-like
                                           Shape{3, 3, 3, 128, DType::kBF16},
                                           Shape{5, 1, 1, 6, DType::kBF16},
                                           Shape{9, 0, 3, 16, DType::kF32}));  // V only

}  // namespace
}  // namespace kvfold
