// Drives `kvfold calibrate` on the real stories260K as a user would: it measures, searches, writes
// a plan that `eval` and `generate` accept and that folds what its table says, and refuses bad
// input cleanly.
#include <unistd.h>

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

std::string Model() { return testing::SourcePath("models/stories260K"); }
std::string Sample() { return testing::SourcePath("tests/data/stories260K_sample.txt"); }
std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/calibrate_" + std::to_string(getpid()) + "_" + name;
}

std::vector<std::string> SmallRun(const std::string& out, const std::string& tolerance) {
  return {"calibrate", "--model",
          Model(),     "--data",
          Sample(),    "--out",
          out,         "--window",
          "64",        "--calibration-windows",
          "3",         "--heldout-tokens",
          "256",       "--max-ppl-increase",
          tolerance};
}

TEST(CalibrateCliTest, WritesAPlanThatEvalAndGenerateRun) {
  const std::string plan = TempPath("plan.json");
  // A generous tolerance so the search keeps at least one change on this tiny model.
  const CliResult r = RunKvfold(SmallRun(plan, "60%"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("measuring: window 3 / 3"));
  EXPECT_THAT(r.out, HasSubstr("unfolded"));
  EXPECT_THAT(r.out, HasSubstr("kept"));
  EXPECT_THAT(r.out, HasSubstr("plan written to " + plan));

  std::ifstream in(plan);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("version"), 1);
  ASSERT_EQ(j.at("layers").size(), 5u);
  int folded = 0;
  for (const auto& layer : j.at("layers")) folded += layer.at("mode") != "full";
  EXPECT_GE(folded, 1);

  const CliResult unfolded = RunKvfold({"eval", "--model", Model(), "--data", Sample(), "--json"});
  const CliResult with_plan = RunKvfold(
      {"eval", "--model", Model(), "--data", Sample(), "--json", "--attention-plan", plan});
  ASSERT_EQ(unfolded.exit_code, 0) << unfolded.err;
  ASSERT_EQ(with_plan.exit_code, 0) << with_plan.err;
  const auto a = nlohmann::json::parse(unfolded.out), b = nlohmann::json::parse(with_plan.out);
  EXPECT_LT(b.at("kv_bytes_per_token").get<int64_t>(), a.at("kv_bytes_per_token").get<int64_t>());
  EXPECT_NE(b.at("mean_nll").get<double>(), a.at("mean_nll").get<double>());

  const CliResult gen = RunKvfold({"generate", "--model", Model(), "--attention-plan", plan,
                                   "--prompt", "Once upon a time", "--max-tokens", "12"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_THAT(gen.out, HasSubstr("Once upon a time"));
}

TEST(CalibrateCliTest, ZeroToleranceKeepsTheModelUnfolded) {
  const std::string plan = TempPath("strict.json");
  const CliResult r = RunKvfold(SmallRun(plan, "0%"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("rejected"));
  std::ifstream in(plan);
  const nlohmann::json j = nlohmann::json::parse(in);
  for (const auto& layer : j.at("layers")) EXPECT_EQ(layer.at("mode"), "full");
}

TEST(CalibrateCliTest, BadInputGetsAClearErrorAndNonZeroExit) {
  const std::string plan = TempPath("bad.json");
  CliResult r = RunKvfold({"calibrate", "--model", Model(), "--data", Sample()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--out"));
  std::vector<std::string> args = SmallRun(plan, "lots");
  r = RunKvfold(args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--max-ppl-increase"));
  r = RunKvfold({"calibrate", "--model", Model(), "--data", TempPath("absent.txt"), "--out", plan});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot read"));
  args = SmallRun(plan, "2%");
  args.push_back("--calibration-windows=0");
  r = RunKvfold(args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--calibration-windows"));
  args = SmallRun(plan, "2%");
  args.push_back("--window=4096");
  r = RunKvfold(args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--window 4096 is outside"));
  const std::string tiny = TempPath("tiny.txt");
  std::ofstream(tiny) << "Once upon a time.";
  r = RunKvfold({"calibrate", "--model", Model(), "--data", tiny, "--out", plan});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("too short"));
}

}  // namespace
}  // namespace kvfold
