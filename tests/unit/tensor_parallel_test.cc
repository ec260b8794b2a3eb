// Tensor-parallel LlamaModel (worker/tensor_parallel.h): N ranks as separate processes, forked
// before anything in them starts a thread or a communicator, meeting through a gloo FileStore in
// a fresh folder and talking over TCP on 127.0.0.1. Each rank loads only its shard and runs the
// same steps: a two-sequence prefill, then 16 greedy decode steps. The reference is the same
// model at size 1 (its own process too).
//
// What must hold: every rank of a group returns the same logits bit for bit (the all-gather
// hands every rank the same rows); the greedy tokens equal size 1's; every logit is within
// kRelativeTolerance of size 1's, relative to that row's largest |logit|. Where the tolerance
// comes from: sharding changes only the order of additions, in the row-parallel projections
// (o_proj, down_proj: each rank sums its K/N inputs, then the ranks' partial sums are added in
// rank order, where size 1 sums all K in the kernel's order). Each reordered F32 sum of K terms
// differs by at most ~K·2^-24 of Σ|terms| (K <= 172 here: ~1e-5), typically ~√K·2^-24 (~1e-6),
// and a few such perturbations per layer pass through 4-6 normalised layers to the logits; the
// embeddings (one rank's row plus exact zeros) and the logits themselves (whole dot products on
// one rank) are not reordered. 1e-4 leaves an order of magnitude over what is seen (~1e-6) and
// is still far below the gap a wrong shard leaves (an unsharded reference, or any head or column
// read from the wrong rank, moves logits by O(1)).
#include "worker/tensor_parallel.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "server/cli/command.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/attention_plan.h"
#include "worker/gloo_communicator.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"
#include "worker/lockstep_batch.h"
#include "worker/model_loader.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

constexpr double kRelativeTolerance = 1e-4;
constexpr int kSeqs = 2, kPromptLen = 8, kDecodeSteps = 16;
constexpr int kBlockSize = 4, kBlocksPerSeq = 8;  // 32 positions per sequence

std::string Stories260K() { return testing::SourcePath("models/stories260K"); }

// ---------------------------------------------------------------------------------------------
// Plans as the tests state them.

LayerPlan Full() { return {}; }
LayerPlan Share(int from, std::vector<int32_t> align = {}) {
  LayerPlan l;
  l.mode = AttentionMode::kShare;
  l.source = from;
  l.align = std::move(align);
  return l;
}
LayerPlan Cluster(std::vector<int32_t> static_map) {
  LayerPlan l;
  l.mode = AttentionMode::kCluster;
  l.static_map = std::move(static_map);
  for (size_t g = 0; g < l.static_map.size(); ++g) l.clusters += l.static_map[g] == int32_t(g);
  return l;
}
LayerPlan Drop(int hidden, float scale) {
  LayerPlan l;
  l.mode = AttentionMode::kDrop;
  for (int i = 0; i < hidden; ++i) l.bias.push_back(scale * std::sin(0.7f * i + 1.0f));
  return l;
}
LayerPlan KvFrom(int from) {
  LayerPlan l;
  l.mode = AttentionMode::kKvFrom;
  l.source = from;
  return l;
}
AttentionPlan Plan(std::vector<LayerPlan> layers) {
  AttentionPlan p;
  p.layers = std::move(layers);
  return p;
}

// stories260K: 5 layers, 8 query heads, 4 KV heads, hidden 64. Alignments swap heads within
// pairs (a rank holds 2 query heads at size 4); the cluster map merges KV heads within pairs
// (allowed at size 2, crossing shards at size 4, where each rank holds one KV head).
AttentionPlan StoriesFolded(int tp) {
  const std::vector<int32_t> map =
      tp <= 2 ? std::vector<int32_t>{0, 0, 2, 2} : std::vector<int32_t>{0, 1, 2, 3};
  return Plan(
      {Full(), Share(0, {1, 0, 3, 2, 5, 4, 7, 6}), Cluster(map), Drop(64, 0.3f), KvFrom(0)});
}

// The random model: 6 layers, 16 query heads, 8 KV heads (a rank holds 4 and 2 at size 4).
AttentionPlan RandomFolded() {
  return Plan({Full(), Share(0, {3, 2, 1, 0, 4, 6, 5, 7, 11, 10, 9, 8, 12, 13, 15, 14}),
               Cluster({0, 0, 2, 2, 4, 4, 6, 7}), Drop(64, 0.5f), Full(), Share(4)});
}

testing::RandomLlamaSpec RandomSpec() {
  testing::RandomLlamaSpec s;
  s.layers = 6;
  s.attention_bias = true;  // sharded q/k/v biases; o_proj's bias added once
  s.mlp_bias = true;
  return s;
}

// ---------------------------------------------------------------------------------------------
// One rank's run, in its own process.

struct RunResult {
  std::vector<int32_t> tokens;  // per step, per sequence: the greedy token
  std::vector<float> logits;    // per step, per sequence: vocab_size logits
};

int32_t Argmax(const float* row, int n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

// `forced`: every step feeds the next tokens of a fixed sequence instead of the greedy ones, so
// two runs whose greedy tokens part still compare logits over the same inputs.
absl::StatusOr<RunResult> RunRank(const std::string& model_path, const AttentionPlan& plan,
                                  int rank, int size, const std::string& store_dir,
                                  bool forced = false) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  std::unique_ptr<GlooCommunicator> comm;
  if (size > 1) {
    GlooOptions options;
    options.rank = rank;
    options.size = size;
    options.timeout = std::chrono::seconds(60);  // a loaded machine: generous, still bounded
    KVFOLD_ASSIGN_OR_RETURN(comm, GlooCommunicator::CreateWithFileStore(options, store_dir));
  }
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<WeightSource> weights, OpenWeights(model_path));
  KVFOLD_ASSIGN_OR_RETURN(
      std::unique_ptr<LlamaModel> model,
      LlamaModel::Load(std::move(weights), *ops, plan, TensorParallel{rank, size, comm.get()}));
  const int vocab = model->config().vocab_size;
  KvCache cache(*ops, model->kv_layer_shapes(), kSeqs * kBlocksPerSeq, kBlockSize);
  LockstepBatch lockstep(kBlocksPerSeq, kBlockSize, kSeqs);
  std::vector<int32_t> ids;
  for (int s = 0; s < kSeqs; ++s) {
    for (int i = 0; i < kPromptLen; ++i) ids.push_back((7 + 31 * s + 13 * i) % vocab);
  }
  RunResult out;
  std::vector<float> logits(static_cast<size_t>(kSeqs) * vocab);
  int32_t start = 0;
  for (int step = 0; step <= kDecodeSteps; ++step) {
    const ForwardBatch batch = lockstep.Append(ids, start, LockstepBatch::Logits::kLast);
    KVFOLD_RETURN_IF_ERROR(model->Forward(batch, cache, logits.data()));
    start += static_cast<int32_t>(ids.size()) / kSeqs;
    ids.clear();
    for (int s = 0; s < kSeqs; ++s) ids.push_back(Argmax(logits.data() + s * vocab, vocab));
    out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
    if (forced) {
      for (int s = 0; s < kSeqs; ++s) ids[s] = (7 + 31 * s + 13 * (start + 1)) % vocab;
    }
    out.logits.insert(out.logits.end(), logits.begin(), logits.end());
  }
  return out;
}

template <typename T>
void WriteVector(const std::string& path, const std::vector<T>& v) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

template <typename T>
std::vector<T> ReadVector(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<T> v(bytes.size() / sizeof(T));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

// Runs a group of `size` ranks as forked processes; returns each rank's result (a test failure,
// and nothing, when a rank fails: its error is in the test log).
std::vector<RunResult> RunGroup(const std::string& model_path, const AttentionPlan& plan, int size,
                                const std::string& dir, bool forced = false) {
  const std::string group_dir = absl::StrCat(dir, "/tp", size);
  const std::string store_dir = group_dir + "/store";
  std::filesystem::create_directories(store_dir);
  std::vector<pid_t> children;
  for (int rank = 0; rank < size; ++rank) {
    const pid_t pid = fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork failed";
      break;
    }
    if (pid == 0) {
      // The child: no gtest from here on; it reports through files and its exit code.
      absl::StatusOr<RunResult> got = RunRank(model_path, plan, rank, size, store_dir, forced);
      if (!got.ok()) {
        std::fprintf(stderr, "rank %d of %d: %s\n", rank, size, got.status().ToString().c_str());
        _exit(1);
      }
      const std::string prefix = absl::StrCat(group_dir, "/rank", rank);
      WriteVector(prefix + ".tokens", got->tokens);
      WriteVector(prefix + ".logits", got->logits);
      _exit(0);
    }
    children.push_back(pid);
  }
  bool ok = static_cast<int>(children.size()) == size;
  for (size_t rank = 0; rank < children.size(); ++rank) {
    int wstatus = 0;
    const bool exited = waitpid(children[rank], &wstatus, 0) == children[rank] &&
                        WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
    EXPECT_TRUE(exited) << "rank " << rank << " of " << size << " failed";
    ok = ok && exited;
  }
  if (!ok) return {};
  std::vector<RunResult> results(size);
  for (int rank = 0; rank < size; ++rank) {
    const std::string prefix = absl::StrCat(group_dir, "/rank", rank);
    results[rank] = {ReadVector<int32_t>(prefix + ".tokens"),
                     ReadVector<float>(prefix + ".logits")};
  }
  return results;
}

// Max over rows of max |a - b| / max |reference row|.
double MaxRelativeDifference(const std::vector<float>& got, const std::vector<float>& ref,
                             int vocab) {
  double worst = 0.0;
  for (size_t row = 0; row * vocab < ref.size(); ++row) {
    double scale = 0.0, diff = 0.0;
    for (int j = 0; j < vocab; ++j) {
      scale = std::max(scale, std::abs(double{ref[row * vocab + j]}));
      diff = std::max(diff, std::abs(double{got[row * vocab + j]} - ref[row * vocab + j]));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

struct Case {
  std::string name;
  std::string model;  // empty: the random model
  bool folded = false;
  std::vector<int> sizes = {2, 4};
};

class TensorParallelProcessesTest : public ::testing::TestWithParam<Case> {};

TEST_P(TensorParallelProcessesTest, RanksMatchOneRank) {
  const Case& c = GetParam();
  testing::ScratchDir dir;
  std::string model = c.model;
  if (model.empty()) {
    model = dir.File("random");
    testing::WriteRandomLlama(model, RandomSpec());
  }
  const int vocab = [&] {
    absl::StatusOr<std::unique_ptr<WeightSource>> w = OpenWeights(model);
    return w.ok() ? (*w)->config().vocab_size : 0;
  }();
  ASSERT_GT(vocab, 0);
  auto plan_for = [&](int tp) {
    if (!c.folded) return AttentionPlan{};
    return c.model.empty() ? RandomFolded() : StoriesFolded(tp);
  };
  for (int size : c.sizes) {
    SCOPED_TRACE(absl::StrCat("tensor-parallel size ", size));
    // The reference runs the plan of this size (stories260K's cluster map differs at size 4).
    const std::vector<RunResult> one =
        RunGroup(model, plan_for(size), 1, dir.File("one" + std::to_string(size)));
    const std::vector<RunResult> ranks = RunGroup(model, plan_for(size), size, dir.path());
    ASSERT_EQ(one.size(), 1u);
    ASSERT_EQ(ranks.size(), static_cast<size_t>(size));
    const RunResult& ref = one[0];
    ASSERT_EQ(ref.logits.size(), static_cast<size_t>(kDecodeSteps + 1) * kSeqs * vocab);
    for (int rank = 0; rank < size; ++rank) {
      SCOPED_TRACE(absl::StrCat("rank ", rank));
      EXPECT_EQ(ranks[rank].tokens, ranks[0].tokens);
      EXPECT_TRUE(ranks[rank].logits == ranks[0].logits) << "ranks disagree on the logits";
    }
    EXPECT_EQ(ranks[0].tokens, ref.tokens);
    ASSERT_EQ(ranks[0].logits.size(), ref.logits.size());
    const double diff = MaxRelativeDifference(ranks[0].logits, ref.logits, vocab);
    EXPECT_LE(diff, kRelativeTolerance);
    std::printf("[ %s size %d ] max |logit - size 1| / max |logit| = %.3g\n", c.name.c_str(), size,
                diff);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, TensorParallelProcessesTest,
    ::testing::Values(Case{"stories260K", Stories260K(), false},
                      Case{"stories260K_folded", Stories260K(), true}, Case{"random8kv", "", false},
                      Case{"random8kv_folded", "", true},
                      // GGUF (F32, Q/K rows permuted at load), tied embeddings, 2 KV heads.
                      Case{"tiny_llama3_gguf",
                           testing::SourcePath("tests/fixtures/gguf/tiny-llama3.f32.gguf"),
                           false,
                           {2}}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// The default model (SmolLM2-135M Q4_1: 9 query heads, 3 KV heads, so size 3) at size 3. Its
// logits are not within kRelativeTolerance of size 1's: quantized matmuls round activations to Q8
// blocks, and a reordered F32 sum upstream can move a value across a rounding boundary, a step of
// up to 1/127 of its block's scale, which later layers carry on (~2-4% of max|logit| seen). The
// bound is the one the goldens hold this model to against transformers (gguf_golden_test.cc:
// 0.05 x max|logit|), on teacher-forced inputs so both runs see the same tokens. Skipped when the
// default GGUF is absent.
TEST(TensorParallelDefaultModelTest, SizeThreeIsWithinTheQ8Tolerance) {
  const std::string model = cli::DefaultModelFile();
  if (!std::filesystem::exists(model)) GTEST_SKIP() << model << " is absent (scripts/setup.sh)";
  absl::StatusOr<std::unique_ptr<WeightSource>> w = OpenWeights(model);
  ASSERT_TRUE(w.ok()) << w.status();
  const int vocab = (*w)->config().vocab_size;
  ASSERT_EQ((*w)->config().num_kv_heads, 3);
  testing::ScratchDir dir;
  const std::vector<RunResult> one = RunGroup(model, {}, 1, dir.File("one"), /*forced=*/true);
  const std::vector<RunResult> three = RunGroup(model, {}, 3, dir.path(), /*forced=*/true);
  ASSERT_EQ(one.size(), 1u);
  ASSERT_EQ(three.size(), 3u);
  ASSERT_EQ(three[0].logits.size(), one[0].logits.size());
  EXPECT_TRUE(three[1].logits == three[0].logits && three[2].logits == three[0].logits)
      << "ranks disagree on the logits";
  const double diff = MaxRelativeDifference(three[0].logits, one[0].logits, vocab);
  EXPECT_LE(diff, 0.05);
  std::printf("[ SmolLM2 size 3 ] max |logit - size 1| / max |logit| = %.3g\n", diff);
}

// ---------------------------------------------------------------------------------------------
// In one process: what each rank loads, and the errors.

// A communicator that only knows its place in the group; Load never calls a collective.
class PlaceOnlyCommunicator final : public Communicator {
 public:
  PlaceOnlyCommunicator(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(float*, size_t) override { return Unused(); }
  absl::Status AllGather(const float*, size_t, float*) override { return Unused(); }
  absl::Status Broadcast(float*, size_t, int) override { return Unused(); }
  absl::Status Barrier() override { return Unused(); }

 private:
  static absl::Status Unused() { return absl::UnimplementedError("no collectives here"); }
  int rank_, size_;
};

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadRank(Ops& ops, const std::string& path,
                                                     AttentionPlan plan, int rank, int size,
                                                     Communicator* comm) {
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<WeightSource> weights, OpenWeights(path));
  return LlamaModel::Load(std::move(weights), ops, std::move(plan), {rank, size, comm});
}

TEST(TensorParallelLoadTest, EachRankStoresItsKvHeadsOnly) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  const AttentionPlan plan = StoriesFolded(2);
  auto whole = LoadRank(*ops, Stories260K(), plan, 0, 1, nullptr);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const std::vector<KvLayerShape>& all = (*whole)->kv_layer_shapes();
  std::vector<KvLayerShape> summed(all.size());
  for (int rank = 0; rank < 2; ++rank) {
    PlaceOnlyCommunicator comm(rank, 2);
    auto model = LoadRank(*ops, Stories260K(), plan, rank, 2, &comm);
    ASSERT_TRUE(model.ok()) << model.status();
    const std::vector<KvLayerShape>& shapes = (*model)->kv_layer_shapes();
    ASSERT_EQ(shapes.size(), all.size());
    for (size_t l = 0; l < shapes.size(); ++l) {
      summed[l].k_heads += shapes[l].k_heads;
      summed[l].v_heads += shapes[l].v_heads;
      summed[l].head_dim = shapes[l].head_dim;
    }
    // Layer 2's map {0, 0, 2, 2}: one representative in each rank's two KV heads.
    EXPECT_EQ(shapes[0], (KvLayerShape{2, 2, 8}));
    EXPECT_EQ(shapes[1], (KvLayerShape{0, 2, 8}));
    EXPECT_EQ(shapes[2], (KvLayerShape{1, 2, 8}));
    EXPECT_EQ(shapes[3], (KvLayerShape{0, 0, 8}));
    EXPECT_EQ(shapes[4], (KvLayerShape{0, 0, 8}));
  }
  EXPECT_EQ(summed, all);  // the ranks' caches partition the unsharded one
}

TEST(TensorParallelLoadTest, RefusesASizeThatSplitsAKvHeadGroup) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  PlaceOnlyCommunicator comm(0, 3);
  auto model = LoadRank(*ops, Stories260K(), {}, 0, 3, &comm);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("4 KV heads"), std::string::npos) << model.status();
}

TEST(TensorParallelLoadTest, RefusesAMissingOrMismatchedCommunicator) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  auto none = LoadRank(*ops, Stories260K(), {}, 0, 2, nullptr);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument) << none.status();
  PlaceOnlyCommunicator other(1, 2);
  auto mismatched = LoadRank(*ops, Stories260K(), {}, 0, 2, &other);
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument) << mismatched.status();
}

TEST(TensorParallelLoadTest, RefusesAPlanWhoseAlignmentCrossesShards) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  // Head 0 reads head 4: allowed unsharded, crossing ranks at size 2 (heads 0-3 and 4-7).
  const AttentionPlan plan =
      Plan({Full(), Share(0, {4, 1, 2, 3, 0, 5, 6, 7}), Full(), Full(), Full()});
  ASSERT_TRUE(LoadRank(*ops, Stories260K(), plan, 0, 1, nullptr).ok());
  PlaceOnlyCommunicator comm(0, 2);
  auto model = LoadRank(*ops, Stories260K(), plan, 0, 2, &comm);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("crosses tensor-parallel shards"), std::string::npos)
      << model.status();
}

TEST(TensorParallelLoadTest, RefusesToSplitAQuantizedBlock) {
  // Q8_0 rows are blocks of 32; o_proj's 32 input columns (4 heads of 8) split in two would cut
  // a block in half.
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  const std::string path = testing::SourcePath("tests/fixtures/gguf/tiny-llama-linear.q8_0.gguf");
  ASSERT_TRUE(LoadRank(*ops, path, {}, 0, 1, nullptr).ok());
  PlaceOnlyCommunicator comm(1, 2);
  auto model = LoadRank(*ops, path, {}, 1, 2, &comm);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("would split a block"), std::string::npos)
      << model.status();
}

}  // namespace
}  // namespace kvfold
