// Drives `kvfold eval` as a user or a script would: the readable report, the --json line, the
// --max-tokens cap, and clean errors for bad input.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

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

std::string TempFile(const std::string& name, const std::string& contents) {
  const std::string path = ::testing::TempDir() + "/eval_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path) << contents;
  return path;
}

const std::string& Model() {
  static const std::string* path = new std::string(testing::SourcePath("models/stories260K"));
  return *path;
}

const std::string& Sample() {
  static const std::string* path =
      new std::string(testing::SourcePath("tests/data/stories260K_sample.txt"));
  return *path;
}

TEST(EvalCliTest, JsonSummaryIsSane) {
  const CliResult r = RunKvfold({"eval", "--model", Model(), "--data", Sample(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);  // one line, one object
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1);
  const double ppl = j.at("perplexity");
  EXPECT_TRUE(std::isfinite(ppl));
  EXPECT_GT(ppl, 1.0);
  // The model scores its own samples far better than chance (a uniform guess: its vocabulary).
  EXPECT_LT(ppl, 512.0);
  EXPECT_GT(j.at("tokens_scored").get<int64_t>(), 1000);
  EXPECT_NEAR(std::log(ppl), j.at("mean_nll").get<double>(), 1e-9);
  EXPECT_NEAR(j.at("mean_nll").get<double>() * j.at("tokens_scored").get<double>(),
              j.at("nll_sum").get<double>(), 1e-6 * j.at("nll_sum").get<double>());
  EXPECT_EQ(j.at("context"), 512);  // stories260K's context is 512: the default applies
  EXPECT_TRUE(j.at("bos").get<bool>());
  // BOS starts each window and is not scored.
  EXPECT_EQ(j.at("tokens_forwarded").get<int64_t>(),
            j.at("tokens_scored").get<int64_t>() + j.at("windows").get<int64_t>());
  EXPECT_GT(j.at("tokens_per_second").get<double>(), 0.0);
  // 5 layers x (4 K + 4 V heads) x head_dim 8 x 2 bytes (BF16, the default KV dtype).
  EXPECT_EQ(j.at("kv_bytes_per_token"), 640);
}

TEST(EvalCliTest, MaxTokensCapsTheTokensScored) {
  const CliResult r =
      RunKvfold({"eval", "--model", Model(), "--data", Sample(), "--json", "--max-tokens", "300",
                 "--context", "100", "--kv-cache-dtype", "f32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("tokens_scored"), 300);
  EXPECT_EQ(j.at("windows"), 4);  // 99 + 99 + 99 + 3 scored tokens
  EXPECT_EQ(j.at("kv_bytes_per_token"), 1280);
}

TEST(EvalCliTest, ReadableReport) {
  const CliResult r =
      RunKvfold({"eval", "--model", Model(), "--data", Sample(), "--max-tokens", "200"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tokens scored: 200\n"));
  EXPECT_THAT(r.out, HasSubstr("perplexity: "));
  EXPECT_THAT(r.out, HasSubstr("KV bytes/token: 640 (BF16)"));
}

TEST(EvalCliTest, HelpShowsItsFlags) {
  const CliResult r = RunKvfold({"eval", "--help"});
  EXPECT_THAT(r.out + r.err, HasSubstr("--data"));
  EXPECT_THAT(r.out + r.err, HasSubstr("--context"));
  EXPECT_THAT(r.out + r.err, HasSubstr("--json"));
}

TEST(EvalCliTest, BadInputGetsAClearErrorAndNonZeroExit) {
  const std::string empty = TempFile("empty.txt", "");
  const std::string blank = TempFile("blank.txt", " \n\n\t\n");
  const std::string one_word = TempFile("short.txt", "a");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--data", "/nonexistent/text.txt"}, "cannot read --data /nonexistent/text.txt"},
      {{"--data", empty}, "holds no text"},
      {{"--data", blank}, "holds no text"},
      {{"--data", Sample(), "--context", "1"}, "--context 1 is outside [2, 512]"},
      {{"--data", Sample(), "--context", "4096"}, "--context 4096 is outside [2, 512]"},
      {{"--data", Sample(), "--max-tokens", "0"}, "--max-tokens must be >= 1"},
      {{}, "--data FILE is required"},
      {{"--data", Sample(), "extra"}, "unexpected argument 'extra'"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"eval", "--model", Model()};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const CliResult r = RunKvfold(args);
    EXPECT_NE(r.exit_code, 0) << c.message;
    EXPECT_THAT(r.err, HasSubstr(c.message));
    EXPECT_THAT(r.err, ::testing::StartsWith("kvfold eval: "));
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  // A text of one token still has BOS before it: one token scored.
  const CliResult r = RunKvfold({"eval", "--model", Model(), "--data", one_word, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).at("tokens_scored"), 1);
  std::remove(empty.c_str());
  std::remove(blank.c_str());
  std::remove(one_word.c_str());
}

}  // namespace
}  // namespace kvfold
