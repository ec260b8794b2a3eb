// Attention plan files: parsing, every validation error, JSON round trip, ids and fingerprints,
// and the KV memory each mode stores.
#include "worker/attention_plan.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "nlohmann/json.hpp"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/kv_cache.h"
#include "worker/model_loader.h"

namespace kvfold {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kFingerprint[] = "f1f2";

// 4 layers, 8 query heads over 4 KV heads of 4 dims, hidden 32.
ModelConfig Config() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 4;
  c.vocab_size = 100;
  c.max_position_embeddings = 64;
  return c;
}

json PlanJson(std::vector<json> layers) {
  return {{"version", 1}, {"model_fingerprint", kFingerprint}, {"layers", layers}};
}

json Full() { return {{"mode", "full"}}; }

absl::StatusOr<AttentionPlan> Parse(const std::string& text, int tp = 1,
                                    const std::string& base_dir = ".") {
  return ParseAttentionPlan(text, "plan.json", base_dir, Config(), kFingerprint, tp);
}

absl::StatusOr<AttentionPlan> Parse(const json& j, int tp = 1) { return Parse(j.dump(), tp); }

// The plan's error message, or "OK".
std::string Error(const json& j, int tp = 1) {
  absl::StatusOr<AttentionPlan> p = Parse(j, tp);
  return p.ok() ? "OK" : std::string(p.status().message());
}

TEST(AttentionPlanTest, ParsesEveryMode) {
  const json j = PlanJson({Full(),
                           {{"mode", "share"}, {"from", 0}, {"align", {1, 0, 2, 3, 4, 5, 7, 6}}},
                           {{"mode", "cluster"}, {"clusters", 2}, {"static_map", {0, 0, 2, 2}}},
                           {{"mode", "kv_from"}, {"from", 0}}});
  absl::StatusOr<AttentionPlan> p = Parse(j);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->model_fingerprint, kFingerprint);
  EXPECT_EQ(p->id, Sha256Hex(j.dump()));
  ASSERT_EQ(p->layers.size(), 4u);
  EXPECT_EQ(p->layers[1].mode, AttentionMode::kShare);
  EXPECT_EQ(p->layers[1].source, 0);
  EXPECT_EQ(p->layers[1].align, (std::vector<int32_t>{1, 0, 2, 3, 4, 5, 7, 6}));
  EXPECT_EQ(p->layers[2].mode, AttentionMode::kCluster);
  EXPECT_EQ(p->layers[2].clusters, 2);
  EXPECT_EQ(p->layers[2].window, 5);  // the default
  EXPECT_EQ(p->layers[2].static_map, (std::vector<int32_t>{0, 0, 2, 2}));
  EXPECT_EQ(p->layers[3].mode, AttentionMode::kKvFrom);
  EXPECT_EQ(p->layers[3].source, 0);
  EXPECT_TRUE(p->folded());
}

TEST(AttentionPlanTest, FileErrorsNameTheProblem) {
  EXPECT_THAT(Parse(std::string("{\"version\": 1,")).status().message(),
              HasSubstr("plan.json: not valid JSON"));
  EXPECT_THAT(Error(json::array()), HasSubstr("must be a JSON object"));
  json j = PlanJson({Full(), Full(), Full(), Full()});
  EXPECT_EQ(Error(j), "OK");
  j["version"] = 2;
  EXPECT_THAT(Error(j), HasSubstr("version 2 is not supported"));
  j["version"] = "1";
  EXPECT_THAT(Error(j), HasSubstr("'version' must be an integer"));
  j = PlanJson({Full(), Full(), Full(), Full()});
  j["model_fingerprint"] = "other";
  EXPECT_THAT(Error(j), HasSubstr("calibrated for another model (fingerprint other; this "
                                  "model's is f1f2)"));
  j.erase("model_fingerprint");
  EXPECT_THAT(Error(j), HasSubstr("'model_fingerprint' must be a string"));
  j = PlanJson({Full(), Full(), Full()});
  EXPECT_THAT(Error(j), HasSubstr("3 layers; the model has 4"));
  j["layers"] = "full";
  EXPECT_THAT(Error(j), HasSubstr("'layers' must be an array"));
  j = PlanJson({Full(), Full(), Full(), Full()});
  j["comment"] = "x";
  EXPECT_THAT(Error(j), HasSubstr("unknown field 'comment'"));
}

TEST(AttentionPlanTest, LayerFieldErrors) {
  auto with_layer = [](json layer) { return PlanJson({Full(), Full(), layer, Full()}); };
  EXPECT_THAT(Error(with_layer({{"mode", "fold"}})),
              HasSubstr("plan.json: layer 2: unknown mode 'fold'"));
  EXPECT_THAT(Error(with_layer({{"mode", 3}})), HasSubstr("layer 2: 'mode' must be a string"));
  EXPECT_THAT(Error(with_layer({{"from", 0}})), HasSubstr("layer 2: 'mode' is missing"));
  EXPECT_THAT(Error(with_layer("full")), HasSubstr("layer 2: must be a JSON object"));
  EXPECT_THAT(Error(with_layer({{"mode", "full"}, {"from", 0}})),
              HasSubstr("unknown field 'from' for mode full"));
  EXPECT_THAT(Error(with_layer({{"mode", "share"}, {"form", 0}})),
              HasSubstr("unknown field 'form' for mode share (it takes from, align)"));
  EXPECT_THAT(Error(with_layer({{"mode", "share"}})), HasSubstr("layer 2: 'from' is missing"));
  EXPECT_THAT(Error(with_layer({{"mode", "share"}, {"from", "0"}})),
              HasSubstr("'from' must be an integer"));
  EXPECT_THAT(Error(with_layer({{"mode", "share"}, {"from", 0}, {"align", {0, "1"}}})),
              HasSubstr("'align' must be an array of integers"));
  EXPECT_THAT(Error(with_layer({{"mode", "cluster"}, {"static_map", {0, 1, 2, 3}}})),
              HasSubstr("'clusters' is missing"));
  EXPECT_THAT(Error(with_layer({{"mode", "cluster"}, {"clusters", 2}})),
              HasSubstr("'static_map' is missing"));
  EXPECT_THAT(Error(with_layer({{"mode", "drop"}, {"bias", 1}})),
              HasSubstr("'bias' must be a string"));
}

TEST(AttentionPlanTest, SourceErrors) {
  const json share_later = PlanJson({Full(), {{"mode", "share"}, {"from", 2}}, Full(), Full()});
  EXPECT_THAT(Error(share_later),
              HasSubstr("plan.json: layer 1 (share): 'from' 2 is not an earlier layer"));
  const json share_self = PlanJson({Full(), {{"mode", "share"}, {"from", 1}}, Full(), Full()});
  EXPECT_THAT(Error(share_self), HasSubstr("'from' 1 is not an earlier layer"));
  const json share_negative = PlanJson({Full(), {{"mode", "share"}, {"from", -1}}, Full(), Full()});
  EXPECT_THAT(Error(share_negative), HasSubstr("'from' -1 is not an earlier layer"));
  const json share_of_drop =
      PlanJson({Full(), {{"mode", "drop"}}, {{"mode", "share"}, {"from", 1}}, Full()});
  EXPECT_THAT(Error(share_of_drop),
              HasSubstr("layer 2 (share): 'from' 1 is a drop layer; a share reads a full layer"));
  const json share_of_share = PlanJson(
      {Full(), {{"mode", "share"}, {"from", 0}}, {{"mode", "share"}, {"from", 1}}, Full()});
  EXPECT_THAT(Error(share_of_share), HasSubstr("'from' 1 is a share layer"));
  const json kv_from_drop =
      PlanJson({{{"mode", "drop"}}, {{"mode", "kv_from"}, {"from", 0}}, Full(), Full()});
  EXPECT_THAT(Error(kv_from_drop),
              HasSubstr("layer 1 (kv_from): 'from' 0 is a drop layer, which stores no full K/V"));
  const json kv_from_share = PlanJson(
      {Full(), {{"mode", "share"}, {"from", 0}}, {{"mode", "kv_from"}, {"from", 1}}, Full()});
  EXPECT_THAT(Error(kv_from_share), HasSubstr("'from' 1 is a share layer, which stores no full"));
  const json kv_from_later = PlanJson({{{"mode", "kv_from"}, {"from", 1}}, Full(), Full(), Full()});
  EXPECT_THAT(Error(kv_from_later), HasSubstr("'from' 1 is not an earlier layer"));
}

TEST(AttentionPlanTest, AlignMustBeAPermutationOfTheQueryHeads) {
  auto share = [](json align) {
    return PlanJson({Full(), {{"mode", "share"}, {"from", 0}, {"align", align}}, Full(), Full()});
  };
  EXPECT_EQ(Error(share({7, 6, 5, 4, 3, 2, 1, 0})), "OK");
  EXPECT_THAT(Error(share({0, 1, 2, 3})),
              HasSubstr("'align' has 4 entries; the model has 8 query heads"));
  EXPECT_THAT(Error(share({0, 1, 2, 3, 4, 5, 6, 6})), HasSubstr("not a permutation"));
  EXPECT_THAT(Error(share({0, 1, 2, 3, 4, 5, 6, 8})), HasSubstr("not a permutation"));
  EXPECT_THAT(Error(share({-1, 1, 2, 3, 4, 5, 6, 7})), HasSubstr("not a permutation"));
}

TEST(AttentionPlanTest, StaticMapRules) {
  auto cluster = [](int clusters, json map) {
    return PlanJson({Full(),
                     {{"mode", "cluster"}, {"clusters", clusters}, {"static_map", map}},
                     Full(),
                     Full()});
  };
  EXPECT_EQ(Error(cluster(4, {0, 1, 2, 3})), "OK");  // one head per cluster
  EXPECT_EQ(Error(cluster(1, {0, 0, 0, 0})), "OK");
  EXPECT_EQ(Error(cluster(2, {0, 1, 0, 1})), "OK");  // clusters need not be contiguous
  EXPECT_THAT(Error(cluster(2, {0, 0, 2})),
              HasSubstr("layer 1 (cluster): 'static_map' has 3 entries; the model has 4 KV heads"));
  EXPECT_THAT(Error(cluster(2, {0, 0, 2, 4})), HasSubstr("'static_map'[3] = 4 is not a KV head"));
  EXPECT_THAT(Error(cluster(2, {0, 0, 3, 2})), HasSubstr("head 3 is not its own representative"));
  EXPECT_THAT(Error(cluster(2, {1, 1, 2, 2})),
              HasSubstr("'static_map'[0] = 1: a representative must be its cluster's lowest"));
  EXPECT_THAT(Error(cluster(3, {0, 0, 2, 2})),
              HasSubstr("'static_map' has 2 clusters; 'clusters' says 3"));
  EXPECT_THAT(Error(cluster(0, {0, 0, 2, 2})), HasSubstr("'clusters' 0 is outside [1, 4]"));
  EXPECT_THAT(Error(cluster(5, {0, 1, 2, 3})), HasSubstr("'clusters' 5 is outside [1, 4]"));
  json bad_window = cluster(2, {0, 0, 2, 2});
  bad_window["layers"][1]["window"] = 0;
  EXPECT_THAT(Error(bad_window), HasSubstr("'window' 0 must be >= 1"));
  // Tensor parallelism: 2 ranks of 2 KV heads each; a cluster must stay within one.
  EXPECT_EQ(Error(cluster(2, {0, 0, 2, 2}), /*tp=*/2), "OK");
  EXPECT_THAT(Error(cluster(2, {0, 1, 0, 1}), /*tp=*/2),
              HasSubstr("KV heads 0 and 2 share a cluster across tensor-parallel shards"));
  EXPECT_THAT(Error(cluster(1, {0, 0, 0, 0}), /*tp=*/2), HasSubstr("across tensor-parallel"));
  EXPECT_THAT(Error(cluster(4, {0, 1, 2, 3}), /*tp=*/3), HasSubstr("does not divide"));
}

TEST(AttentionPlanTest, DropBiasIsReadRelativeToThePlan) {
  testing::ScratchDir dir;
  std::vector<float> beta(32);
  for (int i = 0; i < 32; ++i) beta[i] = 0.25f * i - 3;
  testing::WriteFile(
      dir.File("beta.safetensors"),
      testing::SafetensorsBytes({{"beta.2", "F32", {32}, testing::F32Bytes(beta)},
                                 {"short", "F32", {31}, testing::F32Bytes(std::vector<float>(31))},
                                 {"matrix", "F32", {2, 16}, testing::F32Bytes(beta)}}));
  auto drop = [](const std::string& bias) {
    return PlanJson({Full(), Full(), {{"mode", "drop"}, {"bias", bias}}, Full()});
  };
  const std::string text = drop("beta.safetensors:beta.2").dump();
  testing::WriteFile(dir.File("plan.json"), text);
  absl::StatusOr<AttentionPlan> p =
      LoadAttentionPlan(dir.File("plan.json"), Config(), kFingerprint);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->layers[2].bias, beta);
  EXPECT_EQ(p->layers[2].bias_tensor, "beta.safetensors:beta.2");
  EXPECT_EQ(p->id, Sha256Hex(text));

  auto error = [&](const std::string& bias) {
    absl::StatusOr<AttentionPlan> r = Parse(drop(bias).dump(), 1, dir.path());
    return r.ok() ? std::string("OK") : std::string(r.status().message());
  };
  EXPECT_EQ(error("beta.safetensors:beta.2"), "OK");
  EXPECT_THAT(error("beta.safetensors:beta.3"),
              HasSubstr("layer 2: bias tensor 'beta.3' is not in"));
  EXPECT_THAT(error("beta.safetensors:short"),
              HasSubstr("has shape [31]; the model's hidden size is 32"));
  EXPECT_THAT(error("beta.safetensors:matrix"), HasSubstr("has shape [2, 16]"));
  EXPECT_THAT(error("missing.safetensors:beta.2"), HasSubstr("missing.safetensors"));
  EXPECT_THAT(error("beta.safetensors"), HasSubstr("must be \"FILE.safetensors:TENSOR\""));
  EXPECT_THAT(LoadAttentionPlan(dir.File("absent.json"), Config(), kFingerprint).status().message(),
              HasSubstr("absent.json"));

  // A bias of the wrong length in a plan built in code.
  AttentionPlan built = FullAttentionPlan(Config());
  built.layers[1].mode = AttentionMode::kDrop;
  built.layers[1].bias.assign(5, 1.0f);
  EXPECT_THAT(ValidateAttentionPlan(built, Config()).message(),
              HasSubstr("layer 1 (drop): the bias has 5 values; the model's hidden size is 32"));
}

TEST(AttentionPlanTest, JsonRoundTrip) {
  AttentionPlan plan = FullAttentionPlan(Config());
  plan.model_fingerprint = kFingerprint;
  plan.layers[1] = {AttentionMode::kShare, 0, {1, 0, 2, 3, 4, 5, 6, 7}};
  plan.layers[2].mode = AttentionMode::kCluster;
  plan.layers[2].clusters = 3;
  plan.layers[2].window = 7;
  plan.layers[2].static_map = {0, 1, 1, 3};
  plan.layers[3].mode = AttentionMode::kKvFrom;
  plan.layers[3].source = 0;
  const std::string text = AttentionPlanToJson(plan);
  absl::StatusOr<AttentionPlan> back = Parse(text);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(back->id, Sha256Hex(text));
  EXPECT_EQ(AttentionPlanToJson(*back), text);
  ASSERT_EQ(back->layers.size(), plan.layers.size());
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    EXPECT_EQ(back->layers[i].mode, plan.layers[i].mode) << i;
    EXPECT_EQ(back->layers[i].source, plan.layers[i].source) << i;
    EXPECT_EQ(back->layers[i].align, plan.layers[i].align) << i;
    EXPECT_EQ(back->layers[i].clusters, plan.layers[i].clusters) << i;
    EXPECT_EQ(back->layers[i].window, plan.layers[i].window) << i;
    EXPECT_EQ(back->layers[i].static_map, plan.layers[i].static_map) << i;
  }
}

TEST(AttentionPlanTest, CacheSaltSeparatesFoldedPlansOnly) {
  const AttentionPlan none = FullAttentionPlan(Config());
  EXPECT_FALSE(none.folded());
  EXPECT_EQ(none.cache_salt(), 0u);
  absl::StatusOr<AttentionPlan> all_full = Parse(PlanJson({Full(), Full(), Full(), Full()}));
  ASSERT_TRUE(all_full.ok());
  EXPECT_FALSE(all_full->folded());
  EXPECT_EQ(all_full->cache_salt(), 0u);  // computes exactly what no plan does
  absl::StatusOr<AttentionPlan> a = Parse(PlanJson({Full(), Full(), {{"mode", "drop"}}, Full()}));
  absl::StatusOr<AttentionPlan> b = Parse(PlanJson({Full(), {{"mode", "drop"}}, Full(), Full()}));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->cache_salt(), 0u);
  EXPECT_NE(b->cache_salt(), 0u);
  EXPECT_NE(a->cache_salt(), b->cache_salt());
  EXPECT_EQ(a->cache_salt(), std::stoull(a->id.substr(0, 16), nullptr, 16));
}

TEST(AttentionPlanTest, Sha256MatchesTheStandardVectors) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(AttentionPlanTest, FingerprintDependsOnShapesAndEmbedding) {
  const std::string dir = testing::SourcePath("tests/fixtures/models/tiny-llama-linear");
  absl::StatusOr<std::unique_ptr<WeightSource>> w = OpenWeights(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  absl::StatusOr<std::string> fp = ModelFingerprint((*w)->config(), **w);
  ASSERT_TRUE(fp.ok()) << fp.status();
  EXPECT_EQ(fp->size(), 64u);
  EXPECT_EQ(*ModelFingerprint((*w)->config(), **w), *fp);  // deterministic
  ModelConfig other = (*w)->config();
  other.intermediate_size += 1;
  EXPECT_NE(*ModelFingerprint(other, **w), *fp);
  absl::StatusOr<std::unique_ptr<WeightSource>> qwen =
      OpenWeights(testing::SourcePath("tests/fixtures/models/tiny-qwen2"));
  ASSERT_TRUE(qwen.ok());
  EXPECT_NE(*ModelFingerprint((*qwen)->config(), **qwen), *fp);
}

TEST(KvLayerShapesTest, EachModeStoresWhatAttentionMdSays) {
  const ModelConfig c = Config();  // 4 KV heads of 4 dims
  AttentionPlan plan = FullAttentionPlan(c);
  plan.layers[1] = {AttentionMode::kShare, 0};
  plan.layers[2].mode = AttentionMode::kCluster;
  plan.layers[2].clusters = 2;
  plan.layers[2].static_map = {0, 0, 2, 2};
  plan.layers[3] = {AttentionMode::kKvFrom, 0};
  const std::vector<KvLayerShape> shapes = KvLayerShapes(c, plan);
  ASSERT_EQ(shapes.size(), 4u);
  EXPECT_EQ(shapes[0], (KvLayerShape{4, 4, 4}));  // full
  EXPECT_EQ(shapes[1], (KvLayerShape{0, 4, 4}));  // share: V only
  EXPECT_EQ(shapes[2], (KvLayerShape{2, 4, 4}));  // cluster: K per cluster, V for all
  EXPECT_EQ(shapes[3], (KvLayerShape{0, 0, 4}));  // kv_from: nothing
  // (4+4 + 0+4 + 2+4 + 0+0) heads x 4 dims x 2 bytes.
  EXPECT_EQ(KvCache::BytesPerToken(c, plan, DType::kBF16), 18u * 4 * 2);
  EXPECT_EQ(KvCache::BytesPerToken(c, plan, DType::kF32), 18u * 4 * 4);
  EXPECT_EQ(KvCache::BytesPerToken(c, DType::kBF16), 32u * 4 * 2);
  plan.layers[1] = {AttentionMode::kDrop};
  EXPECT_EQ(KvLayerShapes(c, plan)[1], (KvLayerShape{0, 0, 4}));
  EXPECT_EQ(KvLayerShapes(c, FullAttentionPlan(c)), KvLayerShapes(c));
  EXPECT_EQ(KvLayerShapes(c, AttentionPlan{}), KvLayerShapes(c));  // no layers: all full
}

TEST(KvCacheTest, AllocatesOnlyWhatEachLayerStores) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  const std::vector<KvLayerShape> shapes = {{4, 4, 8}, {0, 4, 8}, {2, 4, 8}, {0, 0, 8}};
  KvCache cache(*ops, shapes, /*num_blocks=*/3, /*block_size=*/16, DType::kBF16);
  ASSERT_EQ(cache.num_layers(), 4);
  EXPECT_EQ(cache.shapes(), shapes);
  const KvCacheLayer full = cache.layer(0), share = cache.layer(1), cluster = cache.layer(2),
                     none = cache.layer(3);
  EXPECT_NE(full.k.data, nullptr);
  EXPECT_EQ(full.k.rows, 48);
  EXPECT_EQ(full.k.cols, 32);
  EXPECT_EQ(full.v.cols, 32);
  EXPECT_EQ(full.k.dtype, DType::kBF16);
  EXPECT_EQ(share.k.data, nullptr);
  EXPECT_EQ(share.k.numel(), 0);
  EXPECT_EQ(share.num_k_heads, 0);
  EXPECT_EQ(share.v.cols, 32);
  EXPECT_EQ(share.num_v_heads, 4);
  EXPECT_EQ(cluster.k.cols, 16);
  EXPECT_EQ(cluster.num_k_heads, 2);
  EXPECT_EQ(cluster.v.cols, 32);
  EXPECT_EQ(none.k.data, nullptr);
  EXPECT_EQ(none.v.data, nullptr);
  EXPECT_EQ(none.num_v_heads, 0);
  EXPECT_EQ(none.block_size, 16);
  // The arrays do not overlap: writing the whole of one leaves the others zero.
  std::vector<uint16_t> ones(full.v.numel(), 0x3f80);
  ops->CopyFromHost(ones.data(), full.v);
  std::vector<uint16_t> back(cluster.k.numel(), 1);
  ops->CopyToHost(cluster.k, back.data());
  EXPECT_EQ(back, std::vector<uint16_t>(cluster.k.numel(), 0));
}

TEST(LlamaModelPlanTest, LoadChecksThePlan) {
  std::unique_ptr<Ops> ops = NewCpuOps(1);
  const std::string dir = testing::SourcePath("tests/fixtures/models/tiny-llama3");  // 3 layers
  auto load = [&](AttentionPlan plan) {
    absl::StatusOr<std::unique_ptr<WeightSource>> w = OpenWeights(dir);
    EXPECT_TRUE(w.ok());
    return LlamaModel::Load(*std::move(w), *ops, std::move(plan));
  };
  AttentionPlan plan;
  plan.layers.resize(3);
  plan.layers[2] = {AttentionMode::kShare, 0};
  absl::StatusOr<std::unique_ptr<LlamaModel>> m = load(plan);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->kv_layer_shapes()[2], (KvLayerShape{0, 2, 16}));  // share: V only
  plan.layers[2].mode = AttentionMode::kCluster;
  plan.layers[2].source = -1;
  plan.layers[2].clusters = 1;
  plan.layers[2].static_map = {0, 0};
  m = load(plan);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->kv_layer_shapes()[2], (KvLayerShape{1, 2, 16}));  // K of the representative
  plan.layers[2].static_map = {1, 1};  // a representative must be its cluster's lowest head
  EXPECT_FALSE(load(plan).ok());
  plan.layers.resize(2);
  EXPECT_THAT(load(plan).status().message(), HasSubstr("2 layers; the model has 3"));
  plan.layers = {{AttentionMode::kFull}, {AttentionMode::kKvFrom, 2}, {AttentionMode::kFull}};
  EXPECT_THAT(load(plan).status().message(), HasSubstr("'from' 2 is not an earlier layer"));
  plan.layers[1] = {AttentionMode::kDrop};
  m = load(plan);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->kv_layer_shapes()[1], (KvLayerShape{0, 0, 16}));
  EXPECT_EQ((*m)->kv_layer_shapes()[0], (KvLayerShape{2, 2, 16}));

  // A cache shaped for another plan is refused, not misread.
  KvCache unfolded(*ops, (*m)->config(), 1, 16);
  const int32_t token = 5, pos = 0, qs[] = {0, 1}, ctx[] = {1}, table[] = {0};
  const int64_t slot = 0;
  const int32_t row = 0;
  ForwardBatch batch{absl::MakeConstSpan(&token, 1), absl::MakeConstSpan(&pos, 1),
                     AttentionBatch{qs, ctx, table, 1, absl::MakeConstSpan(&slot, 1)},
                     absl::MakeConstSpan(&row, 1)};
  std::vector<float> logits((*m)->config().vocab_size);
  EXPECT_THAT((*m)->Forward(batch, unfolded, logits.data()).message(),
              HasSubstr("not shaped for this model's attention plan"));
  KvCache folded(*ops, (*m)->kv_layer_shapes(), 1, 16);
  EXPECT_TRUE((*m)->Forward(batch, folded, logits.data()).ok());
}

}  // namespace
}  // namespace kvfold
