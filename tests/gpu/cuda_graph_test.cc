// Step graphs and step staging on the CUDA backend (LlamaModel::set_step_graphs): decode steps
// replayed from a graph give the same bits as the eager run, for batches that fill their bucket
// and batches padded to it, before and after the contexts cross block boundaries (new table
// widths, new graphs); staged eager steps give the same bits as unstaged ones; and a greedy
// generation with graphs picks the CPU backend's tokens.
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "worker/attention_plan.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"
#include "worker/sampler.h"

namespace kvfold {
namespace {

constexpr int32_t kBlockSize = 4;  // small: a few steps cross several block boundaries
constexpr int32_t kNumBlocks = 256;

// Runs decode steps (one new token per sequence) of `num_seqs` sequences on one model, with its
// own cache and block tables; sequence s owns blocks allocated in order of need.
class Decoder {
 public:
  Decoder(LlamaModel& model, Ops& ops, int num_seqs)
      : model_(model),
        cache_(ops, model.kv_layer_shapes(), kNumBlocks, kBlockSize),
        tables_(num_seqs),
        lens_(num_seqs, 0) {}

  // Appends tokens[s] to sequence s; returns [num_seqs * vocab] logits.
  std::vector<float> Step(const std::vector<int32_t>& tokens) {
    const int n = static_cast<int>(lens_.size());
    ForwardBatchArrays b;
    b.token_ids = tokens;
    b.positions.resize(n);
    b.query_start.resize(n + 1);
    b.context_len.resize(n);
    b.logits_rows.resize(n);
    b.slot_mapping.resize(n);
    int32_t width = 0;
    for (int s = 0; s < n; ++s) {
      if (lens_[s] % kBlockSize == 0) tables_[s].push_back(next_block_++);
      b.positions[s] = lens_[s];
      b.slot_mapping[s] = static_cast<int64_t>(tables_[s][lens_[s] / kBlockSize]) * kBlockSize +
                          lens_[s] % kBlockSize;
      b.context_len[s] = ++lens_[s];
      b.query_start[s + 1] = s + 1;
      b.logits_rows[s] = s;
      width = std::max(width, static_cast<int32_t>(tables_[s].size()));
    }
    b.max_blocks_per_seq = width;
    b.block_tables.assign(static_cast<size_t>(n) * width, 0);
    for (int s = 0; s < n; ++s) {
      std::copy(tables_[s].begin(), tables_[s].end(), b.block_tables.begin() + s * width);
    }
    std::vector<float> logits(static_cast<size_t>(n) * model_.config().vocab_size);
    const absl::Status status = model_.Forward(b.View(), cache_, logits.data());
    EXPECT_TRUE(status.ok()) << status;
    return logits;
  }

 private:
  LlamaModel& model_;
  KvCache cache_;
  std::vector<std::vector<int32_t>> tables_;
  std::vector<int32_t> lens_;
  int32_t next_block_ = 0;
};

std::vector<int32_t> Greedy(const std::vector<float>& logits, int num_seqs) {
  const size_t vocab = logits.size() / num_seqs;
  std::vector<int32_t> next(num_seqs);
  for (int s = 0; s < num_seqs; ++s) {
    next[s] = ArgMax(absl::MakeConstSpan(logits).subspan(s * vocab, vocab));
  }
  return next;
}

class CudaGraphTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
    ops_ = *NewCudaOps(0);
  }

  std::unique_ptr<LlamaModel> Load(const std::string& path, StepGraphOptions options,
                                   const AttentionPlan& plan = {}) {
    auto weights = OpenWeights(path);
    CHECK(weights.ok()) << weights.status();
    auto model = LlamaModel::Load(*std::move(weights), *ops_, plan);
    CHECK(model.ok()) << model.status();
    (*model)->set_step_graphs(std::move(options));
    return *std::move(model);
  }

  // Decodes `steps` tokens of `num_seqs` sequences with plain eager steps, staged eager steps and
  // graphs (teacher-forced with the eager run's greedy tokens); every step's logits must be
  // bit-identical across the three.
  void ExpectSameBits(const std::string& path, int num_seqs, int steps,
                      const AttentionPlan& plan = {}) {
    StepGraphOptions staged, graphs;
    staged.stage_inputs = true;
    graphs.graphs = true;
    std::unique_ptr<LlamaModel> eager_model = Load(path, {}, plan);
    std::unique_ptr<LlamaModel> staged_model = Load(path, staged, plan);
    std::unique_ptr<LlamaModel> graph_model = Load(path, graphs, plan);
    Decoder eager(*eager_model, *ops_, num_seqs), stage(*staged_model, *ops_, num_seqs),
        graph(*graph_model, *ops_, num_seqs);
    const int32_t vocab = eager_model->config().vocab_size;
    std::vector<int32_t> tokens(num_seqs);
    for (int s = 0; s < num_seqs; ++s) tokens[s] = (1 + 7 * s) % vocab;  // different prompts
    for (int step = 0; step < steps; ++step) {
      const std::vector<float> want = eager.Step(tokens);
      const std::vector<float> staged_logits = stage.Step(tokens);
      const std::vector<float> graph_logits = graph.Step(tokens);
      ASSERT_EQ(std::memcmp(staged_logits.data(), want.data(), want.size() * sizeof(float)), 0)
          << "staged step " << step << ", " << num_seqs << " sequences";
      ASSERT_EQ(std::memcmp(graph_logits.data(), want.data(), want.size() * sizeof(float)), 0)
          << "graph step " << step << ", " << num_seqs << " sequences";
      tokens = Greedy(want, num_seqs);
    }
  }

  std::unique_ptr<Ops> ops_;
};

// 14 steps with 4-token blocks: table widths 1, 2, 4 (three graph shapes per batch size, each run
// eagerly, captured, then replayed) and contexts crossing three block boundaries.
TEST_F(CudaGraphTest, StoriesGraphsMatchEagerBitForBit) {
  for (const int num_seqs : {1, 3, 8}) ExpectSameBits(testing::StoriesPath(), num_seqs, 14);
}

TEST_F(CudaGraphTest, RandomLlamaGraphsMatchEagerBitForBit) {
  const std::string dir = ::testing::TempDir() + "/cuda_graph_random_llama";
  std::filesystem::create_directories(dir);
  testing::RandomLlamaSpec spec;
  spec.attention_bias = true;
  testing::WriteRandomLlama(dir, spec);
  for (const int num_seqs : {1, 3, 8}) ExpectSameBits(dir, num_seqs, 14);
}

// Folded layers under graphs: share (which recomputes the source's probabilities in a graph
// instead of keeping them: the same bits), cluster (cached head groups) and drop with a bias
// (a broadcast through staged zero rows).
TEST_F(CudaGraphTest, FoldedPlanGraphsMatchEagerBitForBit) {
  const std::string dir = ::testing::TempDir() + "/cuda_graph_folded_llama";
  std::filesystem::create_directories(dir);
  testing::RandomLlamaSpec spec;  // 4 layers, 8 KV heads, hidden 64
  testing::WriteRandomLlama(dir, spec);
  auto weights = OpenWeights(dir);
  ASSERT_TRUE(weights.ok()) << weights.status();
  AttentionPlan plan = FullAttentionPlan((*weights)->config());
  plan.layers[1] = {AttentionMode::kShare, 0};
  plan.layers[2].mode = AttentionMode::kCluster;
  plan.layers[2].clusters = 4;
  plan.layers[2].static_map = {0, 0, 2, 2, 4, 4, 6, 6};
  plan.layers[3] = {AttentionMode::kDrop};
  for (int i = 0; i < spec.hidden; ++i) plan.layers[3].bias.push_back(0.01f * (i % 7 - 3));
  for (const int num_seqs : {1, 3, 8}) ExpectSameBits(dir, num_seqs, 14, plan);
}

// A padding row must not change a real sequence: three sequences alone (padded to 4) and the
// same three beside a fourth real one give the same bits for the three.
TEST_F(CudaGraphTest, PaddingDoesNotChangeLogits) {
  StepGraphOptions graphs;
  graphs.graphs = true;
  std::unique_ptr<LlamaModel> three_model = Load(testing::StoriesPath(), graphs);
  std::unique_ptr<LlamaModel> four_model = Load(testing::StoriesPath(), graphs);
  Decoder three(*three_model, *ops_, 3), four(*four_model, *ops_, 4);
  const size_t vocab = three_model->config().vocab_size;
  std::vector<int32_t> tokens = {1, 8, 15};
  for (int step = 0; step < 10; ++step) {
    const std::vector<float> got = three.Step(tokens);
    std::vector<int32_t> with_fourth = tokens;
    with_fourth.push_back(22 + step);
    const std::vector<float> want = four.Step(with_fourth);
    ASSERT_EQ(std::memcmp(got.data(), want.data(), 3 * vocab * sizeof(float)), 0) << step;
    tokens = Greedy(got, 3);
  }
}

// Greedy decoding of three sequences with graphs picks the CPU backend's tokens (F32 weights: the
// two agree to ~1e-6 relative, far below these steps' top-1 margins).
TEST_F(CudaGraphTest, GreedyGenerationWithGraphsMatchesCpu) {
  constexpr int kSeqs = 3, kSteps = 24;
  std::unique_ptr<Ops> cpu = NewCpuOps(1);
  auto cpu_weights = OpenWeights(testing::StoriesPath());
  ASSERT_TRUE(cpu_weights.ok()) << cpu_weights.status();
  auto cpu_model = LlamaModel::Load(*std::move(cpu_weights), *cpu);
  ASSERT_TRUE(cpu_model.ok()) << cpu_model.status();
  StepGraphOptions graphs;
  graphs.graphs = true;
  std::unique_ptr<LlamaModel> gpu_model = Load(testing::StoriesPath(), graphs);
  Decoder cpu_run(**cpu_model, *cpu, kSeqs), gpu_run(*gpu_model, *ops_, kSeqs);
  std::vector<int32_t> cpu_tokens = {1, 8, 15}, gpu_tokens = cpu_tokens;
  for (int step = 0; step < kSteps; ++step) {
    cpu_tokens = Greedy(cpu_run.Step(cpu_tokens), kSeqs);
    gpu_tokens = Greedy(gpu_run.Step(gpu_tokens), kSeqs);
    ASSERT_EQ(gpu_tokens, cpu_tokens) << "step " << step;
  }
}

}  // namespace
}  // namespace kvfold
