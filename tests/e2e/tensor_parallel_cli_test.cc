// `kvfold generate --tensor-parallel-size N` on CPU: the leader starts N - 1 follower processes of
// the same binary, which load their shards and run the leader's steps. Greedy text (one prompt,
// unfolded and folded; a prompts file through the engine) equals one rank's. A follower killed
// (or stopped) mid-generation makes the leader exit non-zero with a tensor-parallel error, within
// a bound far above the --tensor-parallel-timeout it was given (not a timing measurement: a leader
// that hung would never exit at all), and leaves no follower behind.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/cli_runner.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/attention_plan.h"
#include "worker/model_loader.h"

namespace kvfold {
namespace {

using testing::CliResult;
using ::testing::HasSubstr;
using testing::RunKvfold;

std::string Stories() { return testing::StoriesPath(); }

std::string Fingerprint() { return testing::StoriesFingerprint(); }

// share (head-aligned within pairs), cluster (KV heads merged within pairs), drop, kv_from: valid
// at tensor-parallel size 2 (two KV heads and four query heads per rank).
std::string FoldedPlan() {
  return "{\"version\": 1, \"model_fingerprint\": \"" + Fingerprint() +
         "\", \"layers\": [{\"mode\": \"full\"}, "
         "{\"mode\": \"share\", \"from\": 0, \"align\": [1, 0, 3, 2, 5, 4, 7, 6]}, "
         "{\"mode\": \"cluster\", \"clusters\": 2, \"static_map\": [0, 0, 2, 2]}, "
         "{\"mode\": \"drop\"}, {\"mode\": \"kv_from\", \"from\": 0}]}";
}

CliResult Generate(int tp, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"generate",
                                   "--model",
                                   Stories(),
                                   "--threads",
                                   "1",
                                   "--max-tokens",
                                   "40",
                                   "--tensor-parallel-size",
                                   std::to_string(tp)};
  args.insert(args.end(), extra.begin(), extra.end());
  return RunKvfold(args);
}

TEST(TensorParallelCliTest, GenerateMatchesOneRank) {
  const CliResult one = Generate(1, {"--prompt", "Once upon a time"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_GT(one.out.size(), std::string("Once upon a time").size() + 20);
  for (int tp : {2, 4}) {
    SCOPED_TRACE("tensor-parallel size " + std::to_string(tp));
    const CliResult r = Generate(tp, {"--prompt", "Once upon a time"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, one.out);
  }
}

TEST(TensorParallelCliTest, FoldedPlanMatchesOneRank) {
  testing::ScratchDir dir;
  testing::WriteFile(dir.File("plan.json"), FoldedPlan());
  const std::vector<std::string> flags = {"--prompt", "Once upon a time", "--attention-plan",
                                          dir.File("plan.json")};
  const CliResult one = Generate(1, flags);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const CliResult two = Generate(2, flags);
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_EQ(two.out, one.out);
  // The plan's clusters would cross ranks at size 4 (one KV head per rank): a clear error.
  const CliResult four = Generate(4, flags);
  EXPECT_EQ(four.exit_code, 1);
  EXPECT_THAT(four.err, HasSubstr("across tensor-parallel shards"));
}

// The JSON lines without their timings (which differ run to run).
std::string WithoutTimings(const std::string& out) {
  std::string kept;
  for (size_t at = 0; at < out.size();) {
    size_t end = out.find('\n', at);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(at, end - at);
    kept += line.substr(0, line.find(",\"ttft_ms\"")) + "\n";
    at = end + 1;
  }
  return kept;
}

TEST(TensorParallelCliTest, PromptsFileMatchesOneRank) {
  testing::ScratchDir dir;
  testing::WriteFile(dir.File("prompts.jsonl"),
                     "{\"prompt\": \"Once upon a time\"}\n{\"prompt\": \"The cat\", "
                     "\"max_tokens\": 12}\n{\"prompt\": \"Lily\", \"max_tokens\": 25}\n");
  const std::vector<std::string> flags = {"--prompts-file", dir.File("prompts.jsonl"),
                                          "--kv-cache-memory", "1MiB"};
  const CliResult one = Generate(1, flags);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const CliResult two = Generate(2, flags);
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_THAT(one.out, HasSubstr("\"text\""));
  EXPECT_EQ(WithoutTimings(two.out), WithoutTimings(one.out));
}

TEST(TensorParallelCliTest, RefusesASizeThatDoesNotDivideTheKvHeads) {
  const CliResult r = Generate(3, {"--prompt", "Once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("does not divide the model's 4 KV heads"));
}

// Pids whose parent is `parent` (from /proc/<pid>/stat).
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const size_t close = text.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(text.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == parent) {
      children.push_back(static_cast<pid_t>(std::stoi(name)));
    }
  }
  return children;
}

// Starts a two-rank generation, sends `signal` to the follower once the leader has printed the
// prompt (the group has joined, every rank has its shard, the first step is next), and expects
// the leader to fail with a tensor-parallel error and exit 1.
void ExpectTheLeaderFailsWhenItsFollower(int signal, const testing::ScratchDir& dir) {
  const std::string err_path = dir.File("stderr");
  int out_pipe[2];
  ASSERT_EQ(pipe(out_pipe), 0);
  const std::string kvfold = testing::BinaryPath("kvfold");
  const pid_t leader = fork();
  ASSERT_GE(leader, 0);
  if (leader == 0) {
    dup2(out_pipe[1], STDOUT_FILENO);
    close(out_pipe[0]);
    close(out_pipe[1]);
    std::FILE* err = std::fopen(err_path.c_str(), "w");
    if (err != nullptr) dup2(fileno(err), STDERR_FILENO);
    const std::string model = Stories();
    execl(kvfold.c_str(), kvfold.c_str(), "generate", "--model", model.c_str(), "--threads", "1",
          "--prompt", "Once upon a time", "--max-tokens", "480", "--tensor-parallel-size", "2",
          "--tensor-parallel-timeout", "3", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out_pipe[1]);
  // The leader prints the prompt once the group has joined and every rank has loaded its shard,
  // just before the first step.
  std::string out;
  char buffer[256];
  while (out.find("Once upon a time") == std::string::npos) {
    const ssize_t n = read(out_pipe[0], buffer, sizeof(buffer));
    if (n <= 0) break;
    out.append(buffer, n);
  }
  ASSERT_THAT(out, HasSubstr("Once upon a time"));
  const std::vector<pid_t> followers = ChildrenOf(leader);
  ASSERT_EQ(followers.size(), 1u);
  ASSERT_EQ(kill(followers[0], signal), 0);

  // Its text is far below a pipe's buffer; wait at most 60 s (20x its timeout).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int wstatus = 0;
  pid_t done = 0;
  while ((done = waitpid(leader, &wstatus, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (done == 0) {
    kill(leader, SIGKILL);
    waitpid(leader, &wstatus, 0);
    kill(followers[0], SIGKILL);
    FAIL() << "the leader did not exit after its follower got signal " << signal;
  }
  close(out_pipe[0]);
  ASSERT_TRUE(WIFEXITED(wstatus)) << "the leader died of a signal";
  EXPECT_EQ(WEXITSTATUS(wstatus), 1);
  EXPECT_THAT(testing::ReadFile(err_path), HasSubstr("tensor-parallel"));
  // The leader ended its follower: no process is left behind.
  EXPECT_NE(kill(followers[0], 0), 0);
}

TEST(TensorParallelCliTest, AKilledFollowerFailsTheLeader) {
  testing::ScratchDir dir;
  ExpectTheLeaderFailsWhenItsFollower(SIGKILL, dir);
}

// A follower that stops answering (SIGSTOP) is caught by the timeout instead of a broken
// connection.
TEST(TensorParallelCliTest, ASilentFollowerFailsTheLeader) {
  testing::ScratchDir dir;
  ExpectTheLeaderFailsWhenItsFollower(SIGSTOP, dir);
}

}  // namespace
}  // namespace kvfold
