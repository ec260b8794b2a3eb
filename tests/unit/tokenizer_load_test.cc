// Loading tokenizer.json: malformed and unsupported files give clear errors (never a crash or an
// exception), the alternative merge encoding reads the same, and bos/eos come from the config.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"
#include "tests/testing/paths.h"
#include "tests/unit/tokenizer_expectations.h"

namespace kvfold {
namespace {

using ::kvfold::testing::ReadTextFile;
using ::kvfold::testing::SourcePath;
using ::testing::HasSubstr;

using Json = nlohmann::json;

Json Stories260KJson() {
  return Json::parse(ReadTextFile(SourcePath("models/stories260K/tokenizer.json")));
}

absl::Status LoadStatus(const Json& json) {
  return Tokenizer::FromJson(json.dump(), "test.json").status();
}

TEST(TokenizerLoadTest, MissingFileIsNotFound) {
  absl::Status status = Tokenizer::FromFile("/nonexistent/tokenizer.json").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("/nonexistent/tokenizer.json"));
}

TEST(TokenizerLoadTest, MalformedJsonIsInvalidArgument) {
  for (const std::string text : {"", "{", "{\"model\": [1, 2", "not json", "\xFF\xFE"}) {
    absl::Status status = Tokenizer::FromJson(text, "broken.json").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(status.message(), HasSubstr("broken.json"));
    EXPECT_THAT(status.message(), HasSubstr("not valid JSON"));
  }
}

TEST(TokenizerLoadTest, WrongShapesAreInvalidArgument) {
  const auto mutate = [](auto change) {
    Json json = Stories260KJson();
    change(json);
    return LoadStatus(json);
  };
  const std::vector<std::pair<std::string, absl::Status>> cases = {
      {"root array", LoadStatus(Json::array())},
      {"no model", mutate([](Json& j) { j.erase("model"); })},
      {"vocab array", mutate([](Json& j) { j["model"]["vocab"] = Json::array(); })},
      {"string id", mutate([](Json& j) { j["model"]["vocab"]["a"] = "7"; })},
      {"negative id", mutate([](Json& j) { j["model"]["vocab"]["a"] = -4; })},
      {"huge id", mutate([](Json& j) { j["model"]["vocab"]["a"] = 1LL << 40; })},
      {"merge no space", mutate([](Json& j) { j["model"]["merges"][0] = "ab"; })},
      {"merge 3 parts", mutate([](Json& j) { j["model"]["merges"][0] = "a b c"; })},
      {"merge unknown", mutate([](Json& j) { j["model"]["merges"][0] = "qqq zzz"; })},
      {"merge number", mutate([](Json& j) { j["model"]["merges"][0] = 5; })},
      {"unk missing", mutate([](Json& j) { j["model"]["unk_token"] = "<nope>"; })},
      {"flag string", mutate([](Json& j) { j["model"]["byte_fallback"] = "yes"; })},
      {"added not array", mutate([](Json& j) { j["added_tokens"] = Json::object(); })},
      {"added no id", mutate([](Json& j) { j["added_tokens"][0].erase("id"); })},
      {"normalizer string", mutate([](Json& j) { j["normalizer"] = "Prepend"; })},
      {"sequence no list", mutate([](Json& j) { j["normalizer"].erase("normalizers"); })},
      {"strip content", mutate([](Json& j) { j["decoder"]["decoders"][3]["content"] = "ab"; })},
      {"template no A", mutate([](Json& j) { j["post_processor"]["single"].erase(1); })},
      {"template unknown special",
       mutate([](Json& j) { j["post_processor"]["special_tokens"].erase("<s>"); })},
  };
  for (const auto& [name, status] : cases) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr("test.json")) << name;
  }
}

TEST(TokenizerLoadTest, UnsupportedComponentsAreUnimplementedAndNamed) {
  const auto mutate = [](auto change) {
    Json json = Stories260KJson();
    change(json);
    return LoadStatus(json);
  };
  const Json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
  const Json digits = {{"type", "Digits"}, {"individual_digits", true}};
  const std::vector<std::pair<std::string, absl::Status>> cases = {
      {"NFKC", mutate([](Json& j) {
         j["normalizer"] = {{"type", "NFKC"}};
       })},
      {"after ByteLevel", mutate([&](Json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {byte_level, digits}}};
       })},
      {"RobertaProcessing", mutate([](Json& j) {
         j["post_processor"] = {{"type", "RobertaProcessing"}};
       })},
      {"Unigram", mutate([](Json& j) { j["model"]["type"] = "Unigram"; })},
      {"dropout", mutate([](Json& j) { j["model"]["dropout"] = 0.1; })},
      {"single_word", mutate([](Json& j) { j["added_tokens"][1]["single_word"] = true; })},
      {"Regex", mutate([](Json& j) {
         j["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", "\\s"}};
       })},
  };
  for (const auto& [name, status] : cases) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << name << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(name));
  }
}

// Byte-level BPE families: bos/eos from their tokenizer_config.json (Qwen has no bos).
TEST(TokenizerLoadTest, ByteLevelFamiliesLoadWithTheirSpecialTokens) {
  KVFOLD_REQUIRE_SHARED(llama3_path, "tokenizers/llama3");
  auto llama3 = Tokenizer::FromFile(llama3_path);
  ASSERT_TRUE(llama3.ok()) << llama3.status();
  EXPECT_EQ((*llama3)->bos_id(), 128000);
  EXPECT_EQ((*llama3)->eos_id(), 128009);  // <|eot_id|>
  KVFOLD_REQUIRE_SHARED(qwen3_path, "tokenizers/qwen3");
  auto qwen3 = Tokenizer::FromFile(qwen3_path);
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  EXPECT_EQ((*qwen3)->bos_id(), std::nullopt);
  EXPECT_EQ((*qwen3)->eos_id(), 151645);  // <|im_end|>
}

TEST(TokenizerLoadTest, BadSplitRegexIsInvalidArgumentNamingIt) {
  Json json = Stories260KJson();
  json["pre_tokenizer"] = {{"type", "Split"},
                           {"pattern", {{"Regex", "(unclosed"}}},
                           {"behavior", "Isolated"},
                           {"invert", false}};
  absl::Status status = LoadStatus(json);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("(unclosed"));
}

TEST(TokenizerLoadTest, MergesAsPairsReadLikeMergesAsStrings) {
  Json json = Stories260KJson();
  Json pairs = Json::array();
  pairs.push_back("#version: 0.2");  // a merges.txt header line takes no rank
  for (const Json& merge : json["model"]["merges"]) {
    const std::string line = merge.get<std::string>();
    const size_t space = line.find(' ');
    pairs.push_back(Json::array({line.substr(0, space), line.substr(space + 1)}));
  }
  json["model"]["merges"] = pairs;
  auto from_pairs = Tokenizer::FromJson(json.dump(), "pairs.json");
  ASSERT_TRUE(from_pairs.ok()) << from_pairs.status();
  const testing::Expectations expected = testing::LoadExpectations("stories260K");
  for (const testing::EncodeCase& c : expected.cases) {
    EXPECT_EQ((*from_pairs)->Encode(c.text, false).value(), c.ids) << testing::Quoted(c.text);
  }
}

TEST(TokenizerLoadTest, BosAndEosWithoutConfigAreInferred) {
  auto tokenizer = Tokenizer::FromJson(Stories260KJson().dump(), "stories.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  EXPECT_EQ((*tokenizer)->eos_id(), 2);
}

TEST(TokenizerLoadTest, BosAndEosComeFromTheConfig) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "kvfold_tokenizer_config_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << Stories260KJson().dump();
  // A null bos_token means the model has none, even though the template adds "<s>".
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": null, "eos_token": {"content": "<unk>"}})";
  auto tokenizer = Tokenizer::FromFile(dir.string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->bos_id(), std::nullopt);
  EXPECT_EQ((*tokenizer)->eos_id(), 0);
  std::ofstream(dir / "tokenizer_config.json") << "{broken";
  EXPECT_EQ(Tokenizer::FromFile(dir.string()).status().code(), absl::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvfold
