// Drives `kvfold tokenize` and `kvfold detokenize` as a user would: text or ids on stdin, JSON
// ids or text on stdout, against the Hugging Face expectations in tests/fixtures/tokenizer.
#include <cstdlib>
#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/cli_runner.h"
#include "tests/testing/paths.h"

namespace kvfold {
namespace {

using testing::CliResult;
using ::testing::HasSubstr;
using testing::RunKvfold;

nlohmann::json Expectations(const std::string& name) {
  return nlohmann::json::parse(testing::ReadFile(
      testing::SourcePath("tests/fixtures/tokenizer/expected_" + name + ".json")));
}

// Tokenizes a spread of corpus strings through the binary and compares with HF's ids, then
// detokenizes them back.
void ExpectMatchesFixture(const std::string& tokenizer, const std::string& name) {
  const nlohmann::json expected = Expectations(name);
  const nlohmann::json& cases = expected.at("cases");
  for (size_t i = 0; i < cases.size(); i += 37) {
    const nlohmann::json& c = cases[i];
    const std::string text = c.at("text").get<std::string>();
    CliResult plain = RunKvfold({"tokenize", "--tokenizer", tokenizer}, {.stdin_text = text});
    ASSERT_EQ(plain.exit_code, 0) << plain.err;
    EXPECT_EQ(nlohmann::json::parse(plain.out), c.at("ids")) << name << ": " << text;
    CliResult special = RunKvfold({"tokenize", "--tokenizer", tokenizer, "--add-special-tokens"},
                                  {.stdin_text = text});
    ASSERT_EQ(special.exit_code, 0) << special.err;
    EXPECT_EQ(nlohmann::json::parse(special.out), c.at("ids_with_special")) << name;
    CliResult back = RunKvfold({"detokenize", "--tokenizer", tokenizer}, {.stdin_text = plain.out});
    ASSERT_EQ(back.exit_code, 0) << back.err;
    EXPECT_EQ(back.out, c.at("decode").get<std::string>()) << name;
    CliResult skipped = RunKvfold({"detokenize", "--tokenizer", tokenizer, "--skip-special-tokens"},
                                  {.stdin_text = special.out});
    EXPECT_EQ(skipped.out, c.at("decode_with_special_skip_special").get<std::string>()) << name;
  }
}

TEST(TokenizeCliTest, HelpListsBothCommands) {
  CliResult top = RunKvfold({"--help"});
  EXPECT_THAT(top.out, HasSubstr("tokenize"));
  EXPECT_THAT(top.out, HasSubstr("detokenize"));
  CliResult help = RunKvfold({"tokenize", "--help"});
  EXPECT_THAT(help.out + help.err, HasSubstr("--add_special_tokens"));
}

TEST(TokenizeCliTest, TokenizerJsonAndModelFolder) {
  ExpectMatchesFixture(testing::SourcePath("models/stories260K/tokenizer.json"), "stories260K");
  ExpectMatchesFixture(testing::SourcePath("models/stories260K"), "stories260K");
}

TEST(TokenizeCliTest, GgufFile) {
  ExpectMatchesFixture(testing::SourcePath("tests/fixtures/gguf/stories260K_spm.gguf"),
                       "gguf_stories260K_spm");
}

TEST(TokenizeCliTest, DefaultModelGguf) {
  const char* home = std::getenv("HOME");
  const std::string path =
      std::string(home ? home : "") + "/.cache/kvfold/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent (scripts/setup.sh)";
  ExpectMatchesFixture(path, "smollm2");
}

TEST(TokenizeCliTest, SharedByteLevelFamilies) {
  for (const std::string name : {"llama3", "qwen3"}) {
    KVFOLD_REQUIRE_SHARED(path, "tokenizers/" + name);
    ExpectMatchesFixture(path, name);
  }
}

TEST(TokenizeCliTest, BadInputGetsAClearErrorAndNonZeroExit) {
  const std::string tokenizer = testing::SourcePath("models/stories260K");
  CliResult invalid =
      RunKvfold({"tokenize", "--tokenizer", tokenizer}, {.stdin_text = "ok \xE4\xB8 cut"});
  EXPECT_EQ(invalid.exit_code, 1);
  EXPECT_THAT(invalid.err, HasSubstr("not valid UTF-8 (at byte 3)"));

  CliResult missing =
      RunKvfold({"tokenize", "--tokenizer", "/nonexistent/tok.json"}, {.stdin_text = "hi"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent/tok.json"));

  CliResult not_json = RunKvfold({"detokenize", "--tokenizer", tokenizer}, {.stdin_text = "1, 2"});
  EXPECT_EQ(not_json.exit_code, 1);
  EXPECT_THAT(not_json.err, HasSubstr("JSON array"));

  CliResult not_ids =
      RunKvfold({"detokenize", "--tokenizer", tokenizer}, {.stdin_text = "[1, \"x\"]"});
  EXPECT_EQ(not_ids.exit_code, 1);
  EXPECT_THAT(not_ids.err, HasSubstr("element 1"));

  CliResult out_of_vocab =
      RunKvfold({"detokenize", "--tokenizer", tokenizer}, {.stdin_text = "[5, 100000]"});
  EXPECT_EQ(out_of_vocab.exit_code, 1);
  EXPECT_THAT(out_of_vocab.err, HasSubstr("100000"));

  CliResult positional = RunKvfold({"tokenize", "some text"});
  EXPECT_EQ(positional.exit_code, 2);
  EXPECT_THAT(positional.err, HasSubstr("stdin"));
}

}  // namespace
}  // namespace kvfold
