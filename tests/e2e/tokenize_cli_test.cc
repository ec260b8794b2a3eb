// Drives `kvfold tokenize` and `kvfold detokenize` as a user would: text or ids on stdin, JSON
// ids or text on stdout, against the Hugging Face expectations in tests/fixtures/tokenizer.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/paths.h"

namespace kvfold {
namespace {

using ::testing::HasSubstr;

struct Result {
  int exit_code = -1;
  std::string out, err;
};

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s) {
    if (c == '\'') {
      q.append("'\\''");
    } else {
      q.push_back(c);
    }
  }
  q.push_back('\'');
  return q;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs kvfold with `input` on stdin; every call has its own files (ctest runs cases in parallel).
Result Kvfold(const std::vector<std::string>& args, const std::string& input) {
  static int calls = 0;
  const std::string stem = ::testing::TempDir() + "/kvfold_tok_" + std::to_string(getpid()) + "_" +
                           std::to_string(calls++);
  const std::string in = stem + ".stdin", out = stem + ".stdout", err = stem + ".stderr";
  std::ofstream(in, std::ios::binary) << input;
  std::string cmd = Quote(testing::BinaryPath("kvfold"));
  for (const std::string& a : args) {
    cmd += ' ';
    cmd += Quote(a);
  }
  for (const auto& [redirect, path] : {std::pair{" <", in}, {" >", out}, {" 2>", err}}) {
    cmd += redirect;
    cmd += Quote(path);
  }
  const int status = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  for (const std::string& path : {in, out, err}) std::remove(path.c_str());
  return r;
}

nlohmann::json Expectations(const std::string& name) {
  return nlohmann::json::parse(
      ReadFile(testing::SourcePath("tests/fixtures/tokenizer/expected_" + name + ".json")));
}

// Tokenizes a spread of corpus strings through the binary and compares with HF's ids, then
// detokenizes them back.
void ExpectMatchesFixture(const std::string& tokenizer, const std::string& name) {
  const nlohmann::json expected = Expectations(name);
  const nlohmann::json& cases = expected.at("cases");
  for (size_t i = 0; i < cases.size(); i += 37) {
    const nlohmann::json& c = cases[i];
    const std::string text = c.at("text").get<std::string>();
    Result plain = Kvfold({"tokenize", "--tokenizer", tokenizer}, text);
    ASSERT_EQ(plain.exit_code, 0) << plain.err;
    EXPECT_EQ(nlohmann::json::parse(plain.out), c.at("ids")) << name << ": " << text;
    Result special = Kvfold({"tokenize", "--tokenizer", tokenizer, "--add-special-tokens"}, text);
    ASSERT_EQ(special.exit_code, 0) << special.err;
    EXPECT_EQ(nlohmann::json::parse(special.out), c.at("ids_with_special")) << name;
    Result back = Kvfold({"detokenize", "--tokenizer", tokenizer}, plain.out);
    ASSERT_EQ(back.exit_code, 0) << back.err;
    EXPECT_EQ(back.out, c.at("decode").get<std::string>()) << name;
    Result skipped =
        Kvfold({"detokenize", "--tokenizer", tokenizer, "--skip-special-tokens"}, special.out);
    EXPECT_EQ(skipped.out, c.at("decode_with_special_skip_special").get<std::string>()) << name;
  }
}

TEST(TokenizeCliTest, HelpListsBothCommands) {
  Result top = Kvfold({"--help"}, "");
  EXPECT_THAT(top.out, HasSubstr("tokenize"));
  EXPECT_THAT(top.out, HasSubstr("detokenize"));
  Result help = Kvfold({"tokenize", "--help"}, "");
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
  Result invalid = Kvfold({"tokenize", "--tokenizer", tokenizer}, "ok \xE4\xB8 cut");
  EXPECT_EQ(invalid.exit_code, 1);
  EXPECT_THAT(invalid.err, HasSubstr("not valid UTF-8 (at byte 3)"));

  Result missing = Kvfold({"tokenize", "--tokenizer", "/nonexistent/tok.json"}, "hi");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent/tok.json"));

  Result not_json = Kvfold({"detokenize", "--tokenizer", tokenizer}, "1, 2");
  EXPECT_EQ(not_json.exit_code, 1);
  EXPECT_THAT(not_json.err, HasSubstr("JSON array"));

  Result not_ids = Kvfold({"detokenize", "--tokenizer", tokenizer}, "[1, \"x\"]");
  EXPECT_EQ(not_ids.exit_code, 1);
  EXPECT_THAT(not_ids.err, HasSubstr("element 1"));

  Result out_of_vocab = Kvfold({"detokenize", "--tokenizer", tokenizer}, "[5, 100000]");
  EXPECT_EQ(out_of_vocab.exit_code, 1);
  EXPECT_THAT(out_of_vocab.err, HasSubstr("100000"));

  Result positional = Kvfold({"tokenize", "some text"}, "");
  EXPECT_EQ(positional.exit_code, 2);
  EXPECT_THAT(positional.err, HasSubstr("stdin"));
}

}  // namespace
}  // namespace kvfold
