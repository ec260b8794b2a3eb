#include "worker/model_config.h"

#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Qwen2.5-0.5B-Instruct's config.json.
constexpr char kQwen2Config[] = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896,
  "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768,
  "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 14,
  "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936})";

// Mistral-7B-v0.1's config.json.
constexpr char kMistralConfig[] = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
  "vocab_size": 32000})";

// Llama-3.1-8B-Instruct's config.json.
constexpr char kLlama31Config[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "vocab_size": 128256})";

// A small Llama config whose fields the tests below replace one at a time.
std::string SmallLlama(const std::string& extra = "") {
  return R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
             "vocab_size": 100, "max_position_embeddings": 256)" +
         (extra.empty() ? "" : ", " + extra) + "}";
}

TEST(ModelConfigTest, Stories260KFromTheRepository) {
  const std::string dir = testing::SourcePath("models/stories260K");
  absl::StatusOr<ModelConfig> config =
      ModelConfig::FromJson(ReadText(dir + "/config.json"), dir + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config
                  ->ApplyGenerationConfig(ReadText(dir + "/generation_config.json"),
                                          dir + "/generation_config.json")
                  .ok());
  EXPECT_EQ(config->architecture, "LlamaForCausalLM");
  EXPECT_EQ(config->num_layers, 5);
  EXPECT_EQ(config->hidden_size, 64);
  EXPECT_EQ(config->intermediate_size, 172);
  EXPECT_EQ(config->num_heads, 8);
  EXPECT_EQ(config->num_kv_heads, 4);
  EXPECT_EQ(config->head_dim, 8);
  EXPECT_EQ(config->vocab_size, 512);
  EXPECT_EQ(config->max_position_embeddings, 512);
  EXPECT_DOUBLE_EQ(config->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(config->rope_theta, 10000.0);
  EXPECT_EQ(config->rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_FALSE(config->qkv_bias);
  EXPECT_FALSE(config->o_bias);
  EXPECT_FALSE(config->mlp_bias);
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(2));
  EXPECT_FALSE(config->sliding_window.has_value());
  EXPECT_EQ(config->MaxContext(), config->max_position_embeddings);
}

TEST(ModelConfigTest, Qwen2BiasesAndTiedEmbeddings) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(kQwen2Config, "qwen2/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_FALSE(config->o_bias);
  EXPECT_FALSE(config->mlp_bias);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->head_dim, 64);
  EXPECT_EQ(config->num_kv_heads, 2);
  EXPECT_DOUBLE_EQ(config->rope_theta, 1e6);
  EXPECT_EQ(config->bos_token_id, 151643);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(151645));
  // sliding_window is stated but off unless use_sliding_window is true.
  EXPECT_FALSE(config->sliding_window.has_value());
}

TEST(ModelConfigTest, Qwen2SlidingWindowWhenEnabled) {
  std::string json = kQwen2Config;
  json.replace(json.find(R"("use_sliding_window": false)"), 27, R"("use_sliding_window": true )");
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(json, "qwen2/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sliding_window, 32768);
  EXPECT_EQ(config->sliding_window_start_layer, 21);
}

TEST(ModelConfigTest, MistralSlidingWindowAndDefaultHeadDim) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(kMistralConfig, "mistral/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "MistralForCausalLM");
  EXPECT_EQ(config->sliding_window, 4096);
  EXPECT_EQ(config->sliding_window_start_layer, 0);
  EXPECT_EQ(config->MaxContext(), 4096);  // served exactly up to the window
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_FALSE(config->qkv_bias);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(2));
}

TEST(ModelConfigTest, NullHeadDimAndSlidingWindowMeanDefaults) {
  std::string json = kMistralConfig;
  json.replace(json.find(R"("sliding_window": 4096)"), 22, R"("sliding_window": null)");
  json.insert(json.size() - 1, R"(, "head_dim": null)");
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(json, "mistral/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->sliding_window.has_value());
  EXPECT_EQ(config->head_dim, 128);
}

TEST(ModelConfigTest, Llama3RopeScalingAndEosList) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(kLlama31Config, "l31/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(config->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(config->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(config->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(config->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(config->rope_theta, 500000.0);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_EQ(config->bos_token_id, 128000);
}

TEST(ModelConfigTest, LinearRopeScalingInBothSpellings) {
  for (const char* key : {"type", "rope_type"}) {
    absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(
        SmallLlama(std::string(R"("rope_scaling": {")") + key + R"(": "linear", "factor": 2.5})"),
        "config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->rope_scaling.type, RopeScaling::Type::kLinear);
    EXPECT_DOUBLE_EQ(config->rope_scaling.factor, 2.5);
  }
}

TEST(ModelConfigTest, TransformersFiveRopeParameters) {
  // transformers 5 writes rope_theta and the scaling into one rope_parameters object.
  const std::string path =
      testing::SourcePath("tests/fixtures/models/tiny-llama-linear/config.json");
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(ReadText(path), path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_DOUBLE_EQ(config->rope_scaling.factor, 2.0);
  EXPECT_DOUBLE_EQ(config->rope_theta, 10000.0);
  EXPECT_EQ(config->head_dim, 8);
}

TEST(ModelConfigTest, DefaultRopeTypeMeansNoScaling) {
  absl::StatusOr<ModelConfig> config =
      ModelConfig::FromJson(SmallLlama(R"("rope_scaling": {"rope_type": "default"})"), "c.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope_scaling.type, RopeScaling::Type::kNone);
}

TEST(ModelConfigTest, UnsupportedRopeTypeIsUnimplementedAndNamed) {
  for (const char* type : {"dynamic", "yarn", "longrope"}) {
    absl::StatusOr<ModelConfig> config =
        ModelConfig::FromJson(SmallLlama(std::string(R"("rope_scaling": {"rope_type": ")") + type +
                                         R"(", "factor": 4.0})"),
                              "/m/config.json");
    EXPECT_EQ(config.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(config.status().message(), HasSubstr(type));
    EXPECT_THAT(config.status().message(), HasSubstr("/m/config.json"));
  }
}

TEST(ModelConfigTest, LlamaAttentionBiasBiasesAllFourProjections) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(
      SmallLlama(R"("attention_bias": true, "mlp_bias": true)"), "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_TRUE(config->o_bias);
  EXPECT_TRUE(config->mlp_bias);
}

TEST(ModelConfigTest, ModelTypeStandsInForArchitectures) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(
      R"({"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100,
          "max_position_embeddings": 256})",
      "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(config->num_kv_heads, 8);  // defaults to num_attention_heads
  EXPECT_TRUE(config->qkv_bias);
}

TEST(ModelConfigTest, UnknownArchitectureIsUnimplemented) {
  std::string json = SmallLlama();
  json.replace(json.find("LlamaForCausalLM"), 16, "GPT2LMHeadModel");
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(json, "/m/config.json");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(config.status().message(), HasSubstr("GPT2LMHeadModel"));
}

struct BadConfigCase {
  std::string json;
  std::string field;  // the message must name it
};

TEST(ModelConfigTest, WrongTypesAreInvalidArgumentNamingFileAndField) {
  const BadConfigCase cases[] = {
      {SmallLlama(R"("head_dim": "8")"), "head_dim"},
      {SmallLlama(R"("rms_norm_eps": "1e-5")"), "rms_norm_eps"},
      {SmallLlama(R"("tie_word_embeddings": 1)"), "tie_word_embeddings"},
      {SmallLlama(R"("eos_token_id": "</s>")"), "eos_token_id"},
      {SmallLlama(R"("eos_token_id": [2, "3"])"), "eos_token_id"},
      {SmallLlama(R"("bos_token_id": 1.5)"), "bos_token_id"},
      {SmallLlama(R"("rope_scaling": "linear")"), "rope_scaling"},
      {SmallLlama(R"("rope_scaling": {"type": "linear", "factor": "2"})"), "rope_scaling.factor"},
      {SmallLlama(R"("rope_scaling": {"type": "linear"})"), "rope_scaling.factor"},
      {SmallLlama(R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0})"),
       "rope_scaling.low_freq_factor"},
      {SmallLlama(R"("num_key_value_heads": 10000000000)"), "num_key_value_heads"},
      {SmallLlama(R"("attention_bias": "no")"), "attention_bias"},
      {R"({"architectures": "LlamaForCausalLM"})", "architectures"},
      {R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64})", "intermediate_size"},
  };
  for (const BadConfigCase& c : cases) {
    absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(c.json, "/models/x/config.json");
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(config.status().message(), HasSubstr("/models/x/config.json"));
    EXPECT_THAT(config.status().message(), HasSubstr(c.field)) << config.status();
  }
}

TEST(ModelConfigTest, NotJsonOrNotAnObjectIsInvalidArgument) {
  for (const char* text : {"", "{", "[1, 2]", "\"config\"", "{\"hidden_size\": 64,}"}) {
    absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(text, "/m/config.json");
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(config.status().message(), HasSubstr("/m/config.json"));
  }
}

TEST(ModelConfigTest, InconsistentValuesFailValidation) {
  const BadConfigCase cases[] = {
      {SmallLlama(R"("num_key_value_heads": 3)"), "num_key_value_heads"},
      {SmallLlama(R"("num_key_value_heads": 0)"), "num_key_value_heads"},
      {SmallLlama(R"("head_dim": 7)"), "head_dim"},
      {SmallLlama(R"("rms_norm_eps": 0)"), "rms_norm_eps"},
      {SmallLlama(R"("num_attention_heads": 6, "num_key_value_heads": 3)"), "head_dim"},
      {SmallLlama(R"("rope_scaling": {"factor": 2.0})"), "rope_type"},
      {SmallLlama(R"("eos_token_id": 100)"), "eos_token_id"},
      {SmallLlama(R"("bos_token_id": -1)"), "bos_token_id"},
      {SmallLlama(R"("rope_scaling": {"type": "linear", "factor": 0})"), "factor"},
  };
  for (const BadConfigCase& c : cases) {
    absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(c.json, "/m/config.json");
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(config.status().message(), HasSubstr("/m/config.json"));
    EXPECT_THAT(config.status().message(), HasSubstr(c.field)) << config.status();
  }
  std::string zero_layers = SmallLlama();
  zero_layers.replace(zero_layers.find(R"("num_hidden_layers": 2)"), 22,
                      R"("num_hidden_layers": 0)");
  EXPECT_THAT(ModelConfig::FromJson(zero_layers, "c.json").status().message(),
              HasSubstr("num_hidden_layers must be positive"));
}

// GGUF rope_freqs.weight arrives as per-frequency factors: head_dim / 2 positive values.
TEST(ModelConfigTest, RopeFreqFactorsAreValidated) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(SmallLlama(), "c.json");
  ASSERT_TRUE(config.ok()) << config.status();
  ModelConfig c = *config;
  c.rope_scaling.freq_factors.assign(c.head_dim / 2, 2.0f);
  EXPECT_TRUE(c.Validate().ok());
  c.rope_scaling.freq_factors.assign(c.head_dim / 2 + 1, 2.0f);
  EXPECT_THAT(c.Validate().message(), HasSubstr("expected head_dim / 2"));
  c.rope_scaling.freq_factors.assign(c.head_dim / 2, 2.0f);
  c.rope_scaling.freq_factors[0] = 0.0f;
  EXPECT_THAT(c.Validate().message(), HasSubstr("positive and finite"));
}

TEST(ModelConfigTest, GenerationConfigOverridesEosAndBos) {
  absl::StatusOr<ModelConfig> config =
      ModelConfig::FromJson(SmallLlama(R"("bos_token_id": 1, "eos_token_id": 2)"), "c.json");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(
      config->ApplyGenerationConfig(R"({"bos_token_id": 5, "eos_token_id": [2, 7]})", "g.json")
          .ok());
  EXPECT_EQ(config->bos_token_id, 5);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(2, 7));
  // Fields it does not state keep their values.
  ASSERT_TRUE(
      config->ApplyGenerationConfig(R"({"do_sample": true, "eos_token_id": 9})", "g.json").ok());
  EXPECT_EQ(config->bos_token_id, 5);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(9));
}

TEST(ModelConfigTest, BadGenerationConfigLeavesConfigUnchanged) {
  absl::StatusOr<ModelConfig> config =
      ModelConfig::FromJson(SmallLlama(R"("bos_token_id": 1, "eos_token_id": 2)"), "c.json");
  ASSERT_TRUE(config.ok()) << config.status();
  for (const char* text :
       {R"({"bos_token_id": 3, "eos_token_id": "x"})", "not json", R"({"eos_token_id": 1000})"}) {
    absl::Status status = config->ApplyGenerationConfig(text, "/m/generation_config.json");
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(status.message(), HasSubstr("/m/generation_config.json"));
    EXPECT_EQ(config->bos_token_id, 1);
    EXPECT_THAT(config->eos_token_ids, ElementsAre(2));
  }
}

}  // namespace
}  // namespace kvfold
