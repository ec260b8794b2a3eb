// Attention plans against independent references:
// - an explicit all-full plan equals no plan, bit for bit;
// - `drop` of stories260K's layer 2 (without and with a calibrated bias) equals transformers with
//   that layer's self-attention output replaced by zeros / by the bias
//   (tests/fixtures/golden/stories260K-drop2*.safetensors, scripts/dev/make_goldens.py);
// - `kv_from` equals full attention in a model built so that the two must agree: layer 0's
//   attention and MLP outputs are zeroed (o_proj, down_proj = 0), so layer 1's input equals layer
//   0's; layer 1's input norm and K/V projections are copied from layer 0, so its own K/V would
//   equal layer 0's exactly (same input, same weights, same positions and RoPE). Reading layer 0's
//   cache must then give the same logits bit for bit, while layer 1 keeps its own Q and O.
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/quant.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/attention_plan.h"
#include "worker/model_loader.h"
#include "worker/safetensors.h"
#include "worker/sampler.h"
#include "worker/sequence_runner.h"

namespace kvfold {
namespace {

constexpr int kDroppedLayer = 2;  // make_goldens.py's DROP_LAYER

std::string Stories() { return testing::StoriesPath(); }

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadWithPlan(const std::string& model_dir,
                                                         const std::string& plan_path, Ops& ops) {
  absl::StatusOr<std::unique_ptr<WeightSource>> w = OpenWeights(model_dir);
  if (!w.ok()) return w.status();
  absl::StatusOr<std::string> fp = ModelFingerprint((*w)->config(), **w);
  if (!fp.ok()) return fp.status();
  absl::StatusOr<AttentionPlan> plan = LoadAttentionPlan(plan_path, (*w)->config(), *fp);
  if (!plan.ok()) return plan.status();
  return LlamaModel::Load(*std::move(w), ops, *std::move(plan));
}

// A plan file for `model_dir` with the given layer modes (JSON objects), in `dir`.
std::string WritePlan(const testing::ScratchDir& dir, const std::string& model_dir,
                      const std::vector<std::string>& layers) {
  absl::StatusOr<std::unique_ptr<WeightSource>> w = OpenWeights(model_dir);
  EXPECT_TRUE(w.ok()) << w.status();
  std::string text = "{\"version\": 1, \"model_fingerprint\": \"" +
                     *ModelFingerprint((*w)->config(), **w) + "\", \"layers\": [";
  for (size_t i = 0; i < layers.size(); ++i) text += (i ? ", " : "") + layers[i];
  text += "]}";
  const std::string path = dir.File("plan.json");
  testing::WriteFile(path, text);
  return path;
}

// Prefill of all of `ids` at once, then the same sequence as half a prefill and one-token decodes:
// the logits of every position, both ways.
std::vector<std::vector<float>> RunBothWays(LlamaModel& model, Ops& ops,
                                            const std::vector<int32_t>& ids, DType kv_dtype) {
  std::vector<std::vector<float>> out;
  SequenceRunner whole(model, ops, static_cast<int32_t>(ids.size()), kv_dtype);
  absl::StatusOr<std::vector<float>> all = whole.Append(ids, /*all_logits=*/true);
  EXPECT_TRUE(all.ok()) << all.status();
  out.push_back(all.ok() ? *all : std::vector<float>());
  SequenceRunner steps(model, ops, static_cast<int32_t>(ids.size()), kv_dtype);
  const size_t half = ids.size() / 2;
  absl::StatusOr<std::vector<float>> chunk =
      steps.Append(absl::MakeConstSpan(ids).subspan(0, half), true);
  EXPECT_TRUE(chunk.ok()) << chunk.status();
  std::vector<float> logits = chunk.ok() ? *chunk : std::vector<float>();
  for (size_t p = half; p < ids.size(); ++p) {
    absl::StatusOr<std::vector<float>> step = steps.Append(absl::MakeConstSpan(ids).subspan(p, 1));
    EXPECT_TRUE(step.ok()) << step.status();
    if (step.ok()) logits.insert(logits.end(), step->begin(), step->end());
  }
  out.push_back(logits);
  return out;
}

class AttentionPlanGoldenTest : public ::testing::Test {
 protected:
  std::unique_ptr<Ops> ops_ = NewCpuOps(2);
  testing::ScratchDir dir_;
};

TEST_F(AttentionPlanGoldenTest, AllFullPlanEqualsNoPlanBitForBit) {
  const std::string plan =
      WritePlan(dir_, Stories(), std::vector<std::string>(5, "{\"mode\": \"full\"}"));
  auto with_plan = LoadWithPlan(Stories(), plan, *ops_);
  ASSERT_TRUE(with_plan.ok()) << with_plan.status();
  EXPECT_FALSE((*with_plan)->plan().id.empty());
  auto without = testing::LoadModel(Stories(), *ops_);
  ASSERT_TRUE(without.ok()) << without.status();
  auto golden =
      SafetensorsFile::Open(testing::SourcePath("tests/fixtures/golden/stories260K.safetensors"));
  ASSERT_TRUE(golden.ok());
  const std::vector<int32_t> ids = testing::GoldenIds(**golden, "seq3.input_ids");
  ASSERT_GT(ids.size(), 100u);
  for (DType kv : {DType::kF32, DType::kBF16}) {
    const auto a = RunBothWays(**with_plan, *ops_, ids, kv);
    const auto b = RunBothWays(**without, *ops_, ids, kv);
    ASSERT_EQ(a, b) << DTypeName(kv);
  }
}

struct DropCase {
  std::string golden;
  bool bias;
};

class DropGoldenTest : public AttentionPlanGoldenTest,
                       public ::testing::WithParamInterface<DropCase> {};

TEST_P(DropGoldenTest, MatchesTransformersWithTheLayersAttentionRemoved) {
  std::vector<std::string> layers(5, "{\"mode\": \"full\"}");
  layers[kDroppedLayer] =
      GetParam().bias
          ? "{\"mode\": \"drop\", \"bias\": \"" +
                testing::SourcePath("tests/fixtures/plans/stories260K-beta.safetensors") +
                ":beta.2\"}"
          : "{\"mode\": \"drop\"}";
  auto model = LoadWithPlan(Stories(), WritePlan(dir_, Stories(), layers), *ops_);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->kv_layer_shapes()[kDroppedLayer].v_heads, 0);
  auto unfolded = testing::LoadModel(Stories(), *ops_);
  ASSERT_TRUE(unfolded.ok());

  auto file = SafetensorsFile::Open(
      testing::SourcePath("tests/fixtures/golden/" + GetParam().golden + ".safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  const auto& meta = (*file)->metadata();
  ASSERT_EQ(meta.at("dropped_layer"), std::to_string(kDroppedLayer));
  const float tolerance = 2e-5f * std::stof(meta.at("max_abs_logit")) + 5e-5f;
  const int vocab = (*model)->config().vocab_size;
  for (int s = 0; s < std::stoi(meta.at("num_seqs")); ++s) {
    const std::string seq = "seq" + std::to_string(s);
    const std::vector<int32_t> ids = testing::GoldenIds(**file, seq + ".input_ids");
    const std::vector<float> want = testing::GoldenFloats(**file, seq + ".logits");
    ASSERT_EQ(want.size(), ids.size() * vocab);
    // F32 cache: the reference is F32 throughout (a BF16 cache rounds K/V beyond the tolerance).
    for (DType kv : {DType::kF32}) {
      const auto runs = RunBothWays(**model, *ops_, ids, kv);
      for (size_t r = 0; r < runs.size(); ++r) {
        ASSERT_EQ(runs[r].size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
          ASSERT_NEAR(runs[r][i], want[i], tolerance)
              << seq << (r ? " chunked+decode" : " prefill") << " kv " << DTypeName(kv)
              << ": position " << i / vocab << ", token " << i % vocab;
        }
      }
    }
    // The reference is sensitive: the unfolded model is far from it.
    const auto full = RunBothWays(**unfolded, *ops_, ids, DType::kF32)[0];
    float worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(full[i] - want[i]));
    if (ids.size() > 1) {
      EXPECT_GT(worst, 100 * tolerance) << seq;
    }
  }

  const std::vector<int32_t> prompt = testing::GoldenIds(**file, "greedy.prompt_ids");
  const std::vector<int32_t> expected = testing::GoldenIds(**file, "greedy.output_ids");
  SequenceRunner runner(**model, *ops_, static_cast<int32_t>(prompt.size() + expected.size()));
  absl::StatusOr<std::vector<float>> logits = runner.Append(prompt);
  ASSERT_TRUE(logits.ok());
  std::vector<int32_t> out;
  while (out.size() < expected.size()) {
    out.push_back(ArgMax(*logits));
    if (out.size() == expected.size()) break;
    logits = runner.Append(absl::MakeConstSpan(&out.back(), 1));
    ASSERT_TRUE(logits.ok());
  }
  EXPECT_EQ(out, expected);
}

INSTANTIATE_TEST_SUITE_P(Stories260K, DropGoldenTest,
                         ::testing::Values(DropCase{"stories260K-drop2", false},
                                           DropCase{"stories260K-drop2-bias", true}),
                         [](const auto& info) { return info.param.bias ? "WithBias" : "NoBias"; });

using TensorMap = std::map<std::string, std::vector<float>>;
int twin_count_ = 0;  // each twin gets its own folder

// Layer 0 adds nothing to the residual stream (o_proj and down_proj zero), so layer 1 sees layer
// 0's input; `leaves` of layer 1 are then copied from layer 0.
void MakeLayer1SeeLayer0(TensorMap& t, std::initializer_list<const char*> leaves) {
  for (const char* name :
       {"model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.down_proj.weight"}) {
    EXPECT_TRUE(t.count(name)) << name;
    std::fill(t[name].begin(), t[name].end(), 0.0f);
  }
  for (const char* leaf : leaves) {
    t[std::string("model.layers.1.") + leaf] = t[std::string("model.layers.0.") + leaf];
  }
}

// tiny-llama3 (3 layers, 8 heads of 16 dims, 2 KV heads, hidden 48, F16) rewritten as F32 after
// `edit` changes its tensors.
std::string WriteTwin(const testing::ScratchDir& dir, const std::function<void(TensorMap&)>& edit) {
  const std::string src = testing::SourcePath("tests/fixtures/models/tiny-llama3");
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& entry : std::filesystem::directory_iterator(src)) {
    if (entry.path().extension() != ".safetensors") continue;
    auto f = SafetensorsFile::Open(entry.path().string());
    EXPECT_TRUE(f.ok()) << f.status();
    for (const SafetensorsTensor& t : (*f)->tensors()) {
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      std::vector<float>& values = tensors[t.name];
      values.resize(n);
      cpu::DequantizeRow(t.data, t.dtype, n, values.data());
      shapes[t.name] = t.shape;
    }
  }
  edit(tensors);
  std::vector<testing::TensorSpec> specs;
  for (const auto& [name, values] : tensors) {
    specs.push_back({name, "F32", shapes[name], testing::F32Bytes(values)});
  }
  const std::string out = dir.File("model" + std::to_string(twin_count_++));
  std::filesystem::create_directories(out);
  testing::WriteFile(out + "/model.safetensors", testing::SafetensorsBytes(specs));
  for (const char* file : {"config.json", "generation_config.json"}) {
    std::filesystem::copy_file(src + "/" + file, out + "/" + file);
  }
  return out;
}

TEST_F(AttentionPlanGoldenTest, KvFromEqualsFullAttentionWhenTheKvMustAgree) {
  const std::string model_dir = WriteTwin(dir_, [](TensorMap& t) {
    MakeLayer1SeeLayer0(
        t, {"input_layernorm.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"});
  });
  auto full = testing::LoadModel(model_dir, *ops_);
  ASSERT_TRUE(full.ok()) << full.status();
  auto shared = LoadWithPlan(
      model_dir,
      WritePlan(
          dir_, model_dir,
          {"{\"mode\": \"full\"}", "{\"mode\": \"kv_from\", \"from\": 0}", "{\"mode\": \"full\"}"}),
      *ops_);
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ((*shared)->kv_layer_shapes()[1].k_heads, 0);
  const std::vector<int32_t> ids = {1, 17,  250, 3, 99, 42,  42,  7, 180, 5,   64, 299, 12,  0, 33,
                                    8, 140, 77,  2, 91, 200, 150, 6, 11,  260, 31, 4,   120, 9, 10};
  for (DType kv : {DType::kF32, DType::kBF16}) {
    const auto a = RunBothWays(**shared, *ops_, ids, kv);
    const auto b = RunBothWays(**full, *ops_, ids, kv);
    ASSERT_EQ(a, b) << DTypeName(kv);
  }
  // Layer 1 keeps its own Q: reading layer 0's K/V with layer 0's Q would be another model. The
  // identity is not vacuous: the same plan on the original checkpoint changes the logits.
  const std::string original = testing::SourcePath("tests/fixtures/models/tiny-llama3");
  auto folded_original = LoadWithPlan(
      original,
      WritePlan(
          dir_, original,
          {"{\"mode\": \"full\"}", "{\"mode\": \"kv_from\", \"from\": 0}", "{\"mode\": \"full\"}"}),
      *ops_);
  ASSERT_TRUE(folded_original.ok()) << folded_original.status();
  auto unfolded_original = testing::LoadModel(original, *ops_);
  ASSERT_TRUE(unfolded_original.ok());
  EXPECT_NE(RunBothWays(**folded_original, *ops_, ids, DType::kF32)[0],
            RunBothWays(**unfolded_original, *ops_, ids, DType::kF32)[0]);
}

// Both ways (prefill; half prefill + decodes), F32 and BF16 caches: `folded` equals `full` bit
// for bit.
void ExpectSameLogits(LlamaModel& folded, LlamaModel& full, Ops& ops) {
  const std::vector<int32_t> ids = {1, 17,  250, 3, 99, 42,  42,  7, 180, 5,   64, 299, 12,  0, 33,
                                    8, 140, 77,  2, 91, 200, 150, 6, 11,  260, 31, 4,   120, 9, 10};
  for (DType kv : {DType::kF32, DType::kBF16}) {
    ASSERT_EQ(RunBothWays(folded, ops, ids, kv), RunBothWays(full, ops, ids, kv)) << DTypeName(kv);
  }
}

constexpr int kHeadDim = 16, kHidden = 48;

// Query head rows [h * 16, (h + 1) * 16) of q_proj (48 columns each).
void CopyQueryHead(std::vector<float>& q_proj, int from, int to) {
  std::copy_n(q_proj.begin() + from * kHeadDim * kHidden, kHeadDim * kHidden,
              q_proj.begin() + to * kHeadDim * kHidden);
}

// share: layer 1 reads layer 0's probabilities. With layer 1 seeing layer 0's input and holding
// layer 0's Q/K projections with its query heads permuted by `align` (head h of layer 1 is head
// align[h] of layer 0), its own probabilities are the aligned ones bit for bit, so the folded
// model must equal the full one exactly; layer 1 keeps its own V and O.
TEST_F(AttentionPlanGoldenTest, ShareEqualsFullWhenTheProbabilitiesMustAgree) {
  // A permutation within each KV group (heads 0-3 share KV head 0, 4-7 KV head 1).
  const std::vector<int32_t> align = {2, 0, 3, 1, 5, 4, 7, 6};
  const std::string model_dir = WriteTwin(dir_, [&](TensorMap& t) {
    MakeLayer1SeeLayer0(t, {"input_layernorm.weight", "self_attn.k_proj.weight"});
    const std::vector<float>& q0 = t["model.layers.0.self_attn.q_proj.weight"];
    std::vector<float>& q1 = t["model.layers.1.self_attn.q_proj.weight"];
    for (int h = 0; h < 8; ++h) {
      std::copy_n(q0.begin() + align[h] * kHeadDim * kHidden, kHeadDim * kHidden,
                  q1.begin() + h * kHeadDim * kHidden);
    }
  });
  auto full = testing::LoadModel(model_dir, *ops_);
  ASSERT_TRUE(full.ok()) << full.status();
  std::string align_json = "[";
  for (size_t h = 0; h < align.size(); ++h)
    align_json += (h ? ", " : "") + std::to_string(align[h]);
  align_json += "]";
  auto shared =
      LoadWithPlan(model_dir,
                   WritePlan(dir_, model_dir,
                             {"{\"mode\": \"full\"}",
                              "{\"mode\": \"share\", \"from\": 0, \"align\": " + align_json + "}",
                              "{\"mode\": \"full\"}"}),
                   *ops_);
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ((*shared)->kv_layer_shapes()[1].k_heads, 0);
  EXPECT_EQ((*shared)->kv_layer_shapes()[1].v_heads, 2);
  ExpectSameLogits(**shared, **full, *ops_);
  // Without the alignment the probabilities differ: the check is not vacuous.
  auto unaligned = LoadWithPlan(
      model_dir,
      WritePlan(
          dir_, model_dir,
          {"{\"mode\": \"full\"}", "{\"mode\": \"share\", \"from\": 0}", "{\"mode\": \"full\"}"}),
      *ops_);
  ASSERT_TRUE(unaligned.ok()) << unaligned.status();
  const std::vector<int32_t> ids = {1, 17, 250, 3, 99, 42, 42, 7};
  EXPECT_NE(RunBothWays(**unaligned, *ops_, ids, DType::kF32)[0],
            RunBothWays(**full, *ops_, ids, DType::kF32)[0]);
}

// cluster with one KV head per cluster computes exactly what full attention does.
TEST_F(AttentionPlanGoldenTest, ClusterWithOneHeadPerClusterEqualsFull) {
  const std::string original = testing::SourcePath("tests/fixtures/models/tiny-llama3");
  auto full = testing::LoadModel(original, *ops_);
  ASSERT_TRUE(full.ok()) << full.status();
  auto clustered =
      LoadWithPlan(original,
                   WritePlan(dir_, original,
                             {"{\"mode\": \"full\"}",
                              "{\"mode\": \"cluster\", \"clusters\": 2, \"static_map\": [0, 1]}",
                              "{\"mode\": \"cluster\", \"clusters\": 2, \"static_map\": [0, 1]}"}),
                   *ops_);
  ASSERT_TRUE(clustered.ok()) << clustered.status();
  ExpectSameLogits(**clustered, **full, *ops_);
}

// cluster merging KV heads 0 and 1 of layer 1: when KV head 1's keys and its query heads'
// projections equal KV head 0's, the representative's scores are exactly head 1's own, so the
// folded model (storing one K head, two V heads) equals the full one; with the original weights
// it does not.
TEST_F(AttentionPlanGoldenTest, ClusterEqualsFullWhenTheMembersScoresAgree) {
  const std::string model_dir = WriteTwin(dir_, [](TensorMap& t) {
    std::vector<float>& k = t["model.layers.1.self_attn.k_proj.weight"];
    std::copy_n(k.begin(), kHeadDim * kHidden, k.begin() + kHeadDim * kHidden);
    for (int j = 0; j < 4; ++j)
      CopyQueryHead(t["model.layers.1.self_attn.q_proj.weight"], j, 4 + j);
  });
  const std::vector<std::string> layers = {
      "{\"mode\": \"full\"}", "{\"mode\": \"cluster\", \"clusters\": 1, \"static_map\": [0, 0]}",
      "{\"mode\": \"full\"}"};
  auto full = testing::LoadModel(model_dir, *ops_);
  ASSERT_TRUE(full.ok()) << full.status();
  auto clustered = LoadWithPlan(model_dir, WritePlan(dir_, model_dir, layers), *ops_);
  ASSERT_TRUE(clustered.ok()) << clustered.status();
  EXPECT_EQ((*clustered)->kv_layer_shapes()[1].k_heads, 1);
  EXPECT_EQ((*clustered)->kv_layer_shapes()[1].v_heads, 2);
  ExpectSameLogits(**clustered, **full, *ops_);

  const std::string original = testing::SourcePath("tests/fixtures/models/tiny-llama3");
  auto original_full = testing::LoadModel(original, *ops_);
  auto original_clustered = LoadWithPlan(original, WritePlan(dir_, original, layers), *ops_);
  ASSERT_TRUE(original_full.ok() && original_clustered.ok());
  const std::vector<int32_t> ids = {1, 17, 250, 3, 99, 42, 42, 7};
  EXPECT_NE(RunBothWays(**original_clustered, *ops_, ids, DType::kF32)[0],
            RunBothWays(**original_full, *ops_, ids, DType::kF32)[0]);
}

}  // namespace
}  // namespace kvfold
