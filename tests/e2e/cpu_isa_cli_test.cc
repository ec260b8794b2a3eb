// The real `kvfold` binary (generate, eval) under a bad KVFOLD_ISA: a clear error and a non-zero
// exit code, not a CHECK failure (abort, stack trace).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/cli_runner.h"
#include "tests/testing/paths.h"

namespace kvfold {
namespace {

using testing::CliResult;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunKvfold;

TEST(CpuIsaCliTest, BogusIsaIsACleanError) {
  const std::string model = testing::SourcePath("models/stories260K");
  CliResult r = RunKvfold({"generate", "--model", model, "--prompt", "Once", "--max-tokens", "2"},
                          {.env = {{"KVFOLD_ISA", "bogus"}}});
  ASSERT_TRUE(r.exited) << "killed by a signal; stderr:\n" << r.err;
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("KVFOLD_ISA=bogus"));
  EXPECT_THAT(r.err, HasSubstr("expected generic, avx2 or avx512"));
  EXPECT_THAT(r.err, Not(HasSubstr("Check failed")));
}

TEST(CpuIsaCliTest, BogusIsaIsACleanErrorForEval) {
  const std::string model = testing::SourcePath("models/stories260K");
  const std::string data =
      ::testing::TempDir() + "/kvfold_isa_eval_" + std::to_string(getpid()) + ".txt";
  std::ofstream(data) << "Once upon a time, there was a little girl named Lily.\n";
  CliResult r =
      RunKvfold({"eval", "--model", model, "--data", data}, {.env = {{"KVFOLD_ISA", "bogus"}}});
  std::remove(data.c_str());
  ASSERT_TRUE(r.exited) << "killed by a signal; stderr:\n" << r.err;
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("KVFOLD_ISA=bogus: expected generic, avx2 or avx512"));
  EXPECT_THAT(r.err, Not(HasSubstr("Check failed")));
}

TEST(CpuIsaCliTest, GenericIsaStillGenerates) {
  // The same command with a valid value succeeds, so the failure above is the ISA's.
  const std::string model = testing::SourcePath("models/stories260K");
  CliResult r = RunKvfold({"generate", "--model", model, "--prompt", "Once", "--max-tokens", "2"},
                          {.env = {{"KVFOLD_ISA", "generic"}}});
  ASSERT_TRUE(r.exited) << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace kvfold
