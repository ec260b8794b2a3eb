#include "worker/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"
#include "tests/testing/safetensors_writer.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using testing::F32Bytes;
using ::testing::HasSubstr;
using testing::SafetensorsBytes;
using testing::ScratchDir;
using testing::TensorSpec;
using testing::WriteFile;

// A two-layer Llama small enough to write by hand: hidden 4, 2 heads of 2, vocab 8.
constexpr char kTinyConfig[] = R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 4, "intermediate_size": 6,
  "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
  "vocab_size": 8, "max_position_embeddings": 16, "bos_token_id": 1, "eos_token_id": 2,
  "tie_word_embeddings": true})";

TensorSpec Filled(const std::string& name, std::vector<int64_t> shape, float first) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = first + static_cast<float>(i);
  return {name, "F32", shape, F32Bytes(values)};
}

void WriteConfig(const ScratchDir& dir, const std::string& config = kTinyConfig) {
  WriteFile(dir.File("config.json"), config);
}

// Writes shard files and an index mapping each tensor to the shard that holds it.
void WriteSharded(const ScratchDir& dir, const std::vector<std::vector<TensorSpec>>& shards) {
  nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                          {"weight_map", nlohmann::json::object()}};
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = "model-0000" + std::to_string(s + 1) + "-of-0000" +
                             std::to_string(shards.size()) + ".safetensors";
    WriteFile(dir.File(name), SafetensorsBytes(shards[s]));
    for (const TensorSpec& t : shards[s]) index["weight_map"][t.name] = name;
  }
  WriteFile(dir.File("model.safetensors.index.json"), index.dump(2));
}

TEST(CheckpointTest, OpensStories260KWithEveryTensorShaped) {
  const std::string dir = testing::SourcePath("models/stories260K");
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelConfig& config = (*checkpoint)->config();
  EXPECT_EQ(config.num_layers, 5);
  EXPECT_EQ(config.hidden_size, 64);
  EXPECT_EQ(config.num_heads, 8);
  EXPECT_EQ(config.num_kv_heads, 4);
  EXPECT_EQ(config.head_dim, 8);
  EXPECT_EQ(config.vocab_size, 512);
  EXPECT_TRUE(config.tie_word_embeddings);
  EXPECT_THAT(config.eos_token_ids, ElementsAre(2));
  EXPECT_EQ(config.bos_token_id, 1);

  const int64_t hidden = 64, kv = 4 * 8, inter = 172;
  auto expect_shape = [&](const std::string& name, int64_t rows, int64_t cols) {
    absl::StatusOr<TensorView> view = (*checkpoint)->Get(name, rows, cols);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->dtype, DType::kF32) << name;
    EXPECT_EQ(view->rows, rows) << name;
    EXPECT_EQ(view->cols, cols) << name;
    EXPECT_NE(view->data, nullptr) << name;
  };
  expect_shape("model.embed_tokens.weight", 512, hidden);
  expect_shape("model.norm.weight", 1, hidden);
  for (int i = 0; i < config.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    expect_shape(p + "input_layernorm.weight", 1, hidden);
    expect_shape(p + "post_attention_layernorm.weight", 1, hidden);
    expect_shape(p + "self_attn.q_proj.weight", hidden, hidden);
    expect_shape(p + "self_attn.k_proj.weight", kv, hidden);
    expect_shape(p + "self_attn.v_proj.weight", kv, hidden);
    expect_shape(p + "self_attn.o_proj.weight", hidden, hidden);
    expect_shape(p + "mlp.gate_proj.weight", inter, hidden);
    expect_shape(p + "mlp.up_proj.weight", inter, hidden);
    expect_shape(p + "mlp.down_proj.weight", hidden, inter);
  }
  EXPECT_TRUE((*checkpoint)->Has("model.norm.weight"));
  EXPECT_FALSE((*checkpoint)->Has("lm_head.weight"));  // tied
}

TEST(CheckpointTest, WrongShapeNamesTensorAndFile) {
  const std::string dir = testing::SourcePath("models/stories260K");
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<TensorView> view =
      (*checkpoint)->Get("model.layers.0.self_attn.k_proj.weight", 64, 64);
  EXPECT_EQ(view.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(view.status().message(),
            "tensor model.layers.0.self_attn.k_proj.weight in " + dir +
                "/model.safetensors has shape [32, 64], expected [64, 64]");
  view = (*checkpoint)->Get("model.norm.weight", 1, 65);
  EXPECT_THAT(view.status().message(), HasSubstr("has shape [64], expected [65]"));
  view = (*checkpoint)->Get("lm_head.weight", 512, 64);
  EXPECT_EQ(view.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(view.status().message(), HasSubstr("lm_head.weight"));
  EXPECT_THAT(view.status().message(), HasSubstr(dir));
}

TEST(CheckpointTest, FixtureCheckpointsInEveryDtypeOpen) {
  // F16 in three shards, BF16 with Qwen2 biases, F32 with transformers 5 rope_parameters.
  const struct {
    const char* dir;
    DType dtype;
    const char* tensor;
    int64_t rows, cols;
  } cases[] = {
      {"tests/fixtures/models/tiny-llama3", DType::kF16, "model.layers.2.mlp.down_proj.weight", 48,
       128},
      {"tests/fixtures/models/tiny-qwen2", DType::kBF16, "model.layers.1.self_attn.k_proj.bias", 1,
       32},
      {"tests/fixtures/models/tiny-llama-linear", DType::kF32, "lm_head.weight", 256, 32},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.dir);
    auto checkpoint = Checkpoint::Open(testing::SourcePath(c.dir));
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    absl::StatusOr<TensorView> view = (*checkpoint)->Get(c.tensor, c.rows, c.cols);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->dtype, c.dtype);
  }
}

TEST(CheckpointTest, OpensShardedCheckpointWrittenHere) {
  ScratchDir dir;
  WriteConfig(dir);
  WriteSharded(dir, {{Filled("model.embed_tokens.weight", {8, 4}, 0),
                      Filled("model.layers.0.input_layernorm.weight", {4}, 100)},
                     {Filled("model.layers.1.input_layernorm.weight", {4}, 200),
                      Filled("model.norm.weight", {4}, 300)}});
  WriteFile(dir.File("generation_config.json"), R"({"eos_token_id": [2, 5], "bos_token_id": 1})");
  auto checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_THAT((*checkpoint)->config().eos_token_ids, ElementsAre(2, 5));
  absl::StatusOr<TensorView> embed = (*checkpoint)->Get("model.embed_tokens.weight", 8, 4);
  ASSERT_TRUE(embed.ok()) << embed.status();
  EXPECT_EQ(embed->f32()[31], 31.0f);
  absl::StatusOr<TensorView> norm = (*checkpoint)->Get("model.norm.weight", 1, 4);
  ASSERT_TRUE(norm.ok()) << norm.status();
  EXPECT_EQ(norm->f32()[0], 300.0f);
  EXPECT_EQ(norm->f32()[3], 303.0f);
  EXPECT_TRUE((*checkpoint)->Has("model.layers.1.input_layernorm.weight"));
}

// Error-path tests: each writes a folder, opens it and checks the code and what it names.
class BrokenCheckpointTest : public ::testing::Test {
 protected:
  absl::Status OpenStatus() { return Checkpoint::Open(dir_.path()).status(); }
  void ExpectError(absl::StatusCode code, const std::vector<std::string>& fragments) {
    absl::Status status = OpenStatus();
    EXPECT_EQ(status.code(), code) << status;
    for (const std::string& f : fragments) EXPECT_THAT(status.message(), HasSubstr(f));
  }
  ScratchDir dir_;
};

TEST_F(BrokenCheckpointTest, MissingConfig) {
  WriteFile(dir_.File("model.safetensors"), SafetensorsBytes({Filled("x", {1}, 0)}));
  ExpectError(absl::StatusCode::kNotFound, {dir_.File("config.json")});
}

TEST_F(BrokenCheckpointTest, MalformedConfig) {
  WriteConfig(dir_, R"({"architectures": ["LlamaForCausalLM"], "hidden_size": )");
  ExpectError(absl::StatusCode::kInvalidArgument, {dir_.File("config.json"), "not valid JSON"});
}

TEST_F(BrokenCheckpointTest, ConfigFieldOfWrongType) {
  std::string config = kTinyConfig;
  config.replace(config.find(R"("hidden_size": 4)"), 16, R"("hidden_size": "4")");
  WriteConfig(dir_, config);
  ExpectError(absl::StatusCode::kInvalidArgument, {dir_.File("config.json"), "hidden_size"});
}

TEST_F(BrokenCheckpointTest, MalformedGenerationConfig) {
  WriteConfig(dir_);
  WriteFile(dir_.File("generation_config.json"), R"({"eos_token_id": "two"})");
  ExpectError(absl::StatusCode::kInvalidArgument,
              {dir_.File("generation_config.json"), "eos_token_id"});
}

TEST_F(BrokenCheckpointTest, NoWeights) {
  WriteConfig(dir_);
  ExpectError(absl::StatusCode::kNotFound, {dir_.path(), "model.safetensors"});
}

TEST_F(BrokenCheckpointTest, TruncatedWeights) {
  WriteConfig(dir_);
  const std::string bytes = SafetensorsBytes({Filled("model.norm.weight", {4}, 0)});
  WriteFile(dir_.File("model.safetensors"), bytes.substr(0, bytes.size() - 4));
  ExpectError(absl::StatusCode::kInvalidArgument,
              {dir_.File("model.safetensors"), "model.norm.weight", "past the end"});
}

TEST_F(BrokenCheckpointTest, MissingShard) {
  WriteConfig(dir_);
  WriteSharded(dir_, {{Filled("a", {4}, 0)}, {Filled("b", {4}, 0)}});
  std::filesystem::remove(dir_.File("model-00002-of-00002.safetensors"));
  ExpectError(absl::StatusCode::kNotFound,
              {dir_.File("model-00002-of-00002.safetensors"), "model.safetensors.index.json"});
}

TEST_F(BrokenCheckpointTest, IndexNamesTensorMissingFromItsShard) {
  WriteConfig(dir_);
  WriteSharded(dir_, {{Filled("a", {4}, 0)}, {Filled("b", {4}, 0)}});
  nlohmann::json index = {{"weight_map",
                           {{"a", "model-00001-of-00002.safetensors"},
                            {"b", "model-00002-of-00002.safetensors"},
                            {"ghost", "model-00002-of-00002.safetensors"}}}};
  WriteFile(dir_.File("model.safetensors.index.json"), index.dump());
  ExpectError(absl::StatusCode::kNotFound,
              {"tensor ghost", dir_.File("model.safetensors.index.json"),
               dir_.File("model-00002-of-00002.safetensors")});
}

TEST_F(BrokenCheckpointTest, TensorInTwoShards) {
  WriteConfig(dir_);
  // The index puts a in shard 1 and b in shard 2, but shard 2 holds a copy of a too.
  WriteSharded(dir_, {{Filled("a", {4}, 0)}, {Filled("a", {4}, 0), Filled("b", {4}, 0)}});
  nlohmann::json index = {
      {"weight_map",
       {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}}}};
  WriteFile(dir_.File("model.safetensors.index.json"), index.dump());
  ExpectError(absl::StatusCode::kInvalidArgument,
              {"tensor a", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
}

TEST_F(BrokenCheckpointTest, MalformedIndex) {
  WriteConfig(dir_);
  const std::string index_path = dir_.File("model.safetensors.index.json");
  for (const char* text : {"{", R"({"weight_map": []})", R"({"weight_map": {"a": 3}})",
                           R"({"weight_map": {}})", R"({"weight_map": {"a": "../x.safetensors"}})",
                           R"({"weight_map": {"a": "/etc/passwd"}})"}) {
    SCOPED_TRACE(text);
    WriteFile(index_path, text);
    ExpectError(absl::StatusCode::kInvalidArgument, {index_path});
  }
}

TEST_F(BrokenCheckpointTest, HigherRankTensorIsRejectedByGet) {
  WriteConfig(dir_);
  WriteFile(dir_.File("model.safetensors"), SafetensorsBytes({Filled("cube", {2, 2, 2}, 0)}));
  auto checkpoint = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<TensorView> view = (*checkpoint)->Get("cube", 4, 2);
  EXPECT_EQ(view.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(view.status().message(),
              HasSubstr("tensor cube in " + dir_.File("model.safetensors")));
  EXPECT_THAT(view.status().message(), HasSubstr("[2, 2, 2]"));
}

}  // namespace
}  // namespace kvfold
