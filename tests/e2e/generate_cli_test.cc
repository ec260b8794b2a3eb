// Drives the real `kvfold` binary as a user would: help, generation, bad input.
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace kvfold {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Result {
  int exit_code = -1;
  std::string out, err;
};

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Result Kvfold(const std::vector<std::string>& args) {
  const std::string dir = ::testing::TempDir();
  const std::string out = dir + "/kvfold_stdout", err = dir + "/kvfold_stderr";
  std::string cmd = Quote(testing::BinaryPath("kvfold"));
  for (const std::string& a : args) cmd += " " + Quote(a);
  cmd += " >" + Quote(out) + " 2>" + Quote(err) + " </dev/null";
  const int status = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  return r;
}

TEST(GenerateCliTest, HelpListsCommandsAndFlags) {
  Result top = Kvfold({"--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_THAT(top.out, HasSubstr("generate"));
  Result gen = Kvfold({"generate", "--help"});
  EXPECT_THAT(gen.out + gen.err, HasSubstr("--prompt"));
  EXPECT_THAT(gen.out + gen.err, HasSubstr("--max_tokens"));
  EXPECT_THAT(gen.out + gen.err, ::testing::Not(HasSubstr("--gtest")));
}

TEST(GenerateCliTest, StreamsAContinuationAndReportsSpeed) {
  Result r = Kvfold({"generate", "--prompt", "Once upon a time", "--max-tokens", "30"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("Once upon a time"));
  EXPECT_GT(r.out.size(), std::string("Once upon a time").size() + 20);
  EXPECT_THAT(r.err, HasSubstr("prefill: 5 tokens"));  // BOS + 4 prompt tokens
  EXPECT_THAT(r.err, HasSubstr("decode: 29 tokens"));
}

// llama2.c's own greedy output for stories260K from BOS: the external check, through the binary.
TEST(GenerateCliTest, GreedyFromBosReproducesLlama2c) {
  KVFOLD_REQUIRE_SHARED(expected_path, "models/stories260K/greedy200_from_bos.txt");
  KVFOLD_REQUIRE_SHARED(model, "models/stories260K");
  Result r = Kvfold({"generate", "--model", model, "--max-tokens", "200"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string expected = ReadFile(expected_path);
  std::string got = r.out;
  while (!got.empty() && got.back() == '\n') got.pop_back();
  while (!expected.empty() && expected.back() == '\n') expected.pop_back();
  EXPECT_EQ(got, expected);
}

TEST(GenerateCliTest, SameSeedSameText) {
  const std::vector<std::string> args = {"generate",     "--prompt", "The dog",
                                         "--max-tokens", "40",       "--temperature",
                                         "0.9",          "--seed",   "7"};
  Result a = Kvfold(args), b = Kvfold(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  std::vector<std::string> other = args;
  other.back() = "8";
  EXPECT_NE(Kvfold(other).out, a.out) << "a different seed should change 40 sampled tokens";
}

TEST(GenerateCliTest, BadInputGetsAClearErrorAndNonZeroExit) {
  Result unknown = Kvfold({"frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.err, HasSubstr("unknown command 'frobnicate'"));

  Result missing = Kvfold({"generate", "--model", "/nonexistent/model", "--max-tokens", "1"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent/model"));

  Result zero = Kvfold({"generate", "--max-tokens", "0"});
  EXPECT_EQ(zero.exit_code, 2);

  std::string too_long;
  for (int i = 0; i < 600; ++i) too_long += "dog ";
  Result overlong = Kvfold({"generate", "--prompt", too_long, "--max-tokens", "1"});
  EXPECT_EQ(overlong.exit_code, 1);
  EXPECT_THAT(overlong.err, HasSubstr("context"));
}

TEST(GenerateCliTest, CorruptWeightsAreReportedNotCrashed) {
  const std::string dir = ::testing::TempDir() + "/corrupt_model";
  std::system(("rm -rf " + Quote(dir) + " && mkdir -p " + Quote(dir)).c_str());
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json"}) {
    std::ifstream in(testing::SourcePath(std::string("models/stories260K/") + f));
    std::ofstream(dir + "/" + f) << in.rdbuf();
  }
  std::string weights = ReadFile(testing::SourcePath("models/stories260K/model.safetensors"));
  std::ofstream(dir + "/model.safetensors") << weights.substr(0, weights.size() / 2);
  Result r = Kvfold({"generate", "--model", dir, "--max-tokens", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("model.safetensors"));
}

}  // namespace
}  // namespace kvfold
