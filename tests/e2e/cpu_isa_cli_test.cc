// The real `kvfold` binary (generate, eval) under a bad KVFOLD_ISA: a clear error and a non-zero
// exit code, not a CHECK failure (abort, stack trace).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace kvfold {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Result {
  bool exited = false;  // false: killed by a signal (a CHECK failure aborts)
  int exit_code = -1;
  std::string err;
};

// Runs `env_prefix kvfold args` through the shell, stdout discarded.
Result RunKvfold(const std::string& env_prefix, const std::string& args) {
  const std::string err_path =
      ::testing::TempDir() + "/kvfold_isa_" + std::to_string(getpid()) + ".stderr";
  const std::string cmd = env_prefix + " '" + testing::BinaryPath("kvfold") + "' " + args +
                          " >/dev/null 2>'" + err_path + "' </dev/null";
  const int status = std::system(cmd.c_str());
  Result r;
  r.exited = WIFEXITED(status);
  r.exit_code = r.exited ? WEXITSTATUS(status) : -1;
  std::ifstream f(err_path);
  std::stringstream ss;
  ss << f.rdbuf();
  r.err = ss.str();
  std::remove(err_path.c_str());
  return r;
}

TEST(CpuIsaCliTest, BogusIsaIsACleanError) {
  const std::string model = testing::SourcePath("models/stories260K");
  Result r = RunKvfold("KVFOLD_ISA=bogus",
                       "generate --model '" + model + "' --prompt 'Once' --max-tokens 2");
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
  Result r = RunKvfold("KVFOLD_ISA=bogus", "eval --model '" + model + "' --data '" + data + "'");
  std::remove(data.c_str());
  ASSERT_TRUE(r.exited) << "killed by a signal; stderr:\n" << r.err;
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("KVFOLD_ISA=bogus: expected generic, avx2 or avx512"));
  EXPECT_THAT(r.err, Not(HasSubstr("Check failed")));
}

TEST(CpuIsaCliTest, GenericIsaStillGenerates) {
  // The same command with a valid value succeeds, so the failure above is the ISA's.
  const std::string model = testing::SourcePath("models/stories260K");
  Result r = RunKvfold("KVFOLD_ISA=generic",
                       "generate --model '" + model + "' --prompt 'Once' --max-tokens 2");
  ASSERT_TRUE(r.exited) << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace kvfold
