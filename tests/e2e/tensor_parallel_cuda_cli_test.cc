// `--device cuda --tensor-parallel-size N` through the real binary. Where fewer GPUs are visible
// than ranks (or the build lacks CUDA or NCCL): a one-line error before any follower starts, never
// a crash or a hang, no follower process left behind. With two GPUs or more: greedy tokens over
// NCCL on two GPUs equal one GPU's on stories260K (one prompt, and a prompts file through the
// engine with its GPU memory plan).
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/cli_runner.h"
#include "tests/testing/paths.h"
#include "tests/testing/safetensors_writer.h"
#ifdef KVFOLD_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvfold {
namespace {

using ::testing::AnyOf;
using testing::CliResult;
using ::testing::HasSubstr;
using testing::RunKvfold;

int VisibleGpus() {
#ifdef KVFOLD_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

std::string Stories() { return testing::StoriesPath(); }

int Lines(const std::string& text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

// Processes whose command line mentions `needle` (followers carry --model=PATH).
int ProcessesMentioning(const std::string& needle) {
  int found = 0;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return 0;
  while (dirent* entry = readdir(proc)) {
    const std::string name = entry->d_name;
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::string cmdline = testing::ReadFile("/proc/" + name + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(needle) != std::string::npos) ++found;
  }
  closedir(proc);
  return found;
}

TEST(TensorParallelCudaCliTest, TooFewGpusIsAOneLineErrorAndLeavesNoFollower) {
  if (VisibleGpus() >= 2) GTEST_SKIP() << "two GPUs are visible: the NCCL runs are checked below";
  // A model path of its own, so a follower left running would be found by its --model flag.
  const std::string model = ::testing::TempDir() + "/tp_cuda_model_" + std::to_string(getpid());
  std::filesystem::remove(model);
  std::filesystem::create_directory_symlink(Stories(), model);
  const std::vector<std::vector<std::string>> commands = {
      {"generate", "--model", model, "--device", "cuda", "--tensor-parallel-size", "2",
       "--max-tokens", "4"},
      {"serve", "--model", model, "--device", "cuda", "--tensor-parallel-size", "2", "--port", "0",
       "--grpc-port", "0"},
  };
  for (const std::vector<std::string>& args : commands) {
    SCOPED_TRACE(args[0]);
    const CliResult r = RunKvfold(args);
    ASSERT_TRUE(r.exited) << "killed by a signal: " << r.err;
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr("kvfold " + args[0] + ": --device cuda: "));
    EXPECT_THAT(r.err, AnyOf(HasSubstr("built without CUDA"), HasSubstr("no CUDA device"),
                             HasSubstr("1 CUDA device(s) are visible"), HasSubstr("needs NCCL")));
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(ProcessesMentioning(model), 0);
  }
  std::filesystem::remove(model);
}

CliResult GenerateOnGpus(int tp, const std::vector<std::string>& extra) {
  // F32 K/V: a BF16 cache could flip a near-tie between the two reduction orders.
  std::vector<std::string> args = {"generate",
                                   "--model",
                                   Stories(),
                                   "--device",
                                   "cuda",
                                   "--kv-cache-dtype",
                                   "f32",
                                   "--tensor-parallel-size",
                                   std::to_string(tp)};
  args.insert(args.end(), extra.begin(), extra.end());
  return RunKvfold(args);
}

TEST(TensorParallelCudaCliTest, TwoGpusGreedyEqualsOneGpu) {
  if (VisibleGpus() < 2) GTEST_SKIP() << "fewer than two GPUs are visible";
  const std::vector<std::string> prompt = {"--prompt", "Once upon a time", "--max-tokens", "64"};
  const CliResult one = GenerateOnGpus(1, prompt);
  const CliResult two = GenerateOnGpus(2, prompt);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_GT(one.out.size(), std::string("Once upon a time").size() + 40);
  EXPECT_EQ(two.out, one.out);
  EXPECT_THAT(two.err, HasSubstr("NCCL collectives"));
}

std::vector<nlohmann::json> TokenIds(const std::string& out) {
  std::vector<nlohmann::json> ids;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) ids.push_back(nlohmann::json::parse(line)["token_ids"]);
  }
  return ids;
}

TEST(TensorParallelCudaCliTest, TwoGpusEngineEqualsOneGpu) {
  if (VisibleGpus() < 2) GTEST_SKIP() << "fewer than two GPUs are visible";
  testing::ScratchDir dir;
  testing::WriteFile(dir.File("prompts.jsonl"),
                     "{\"prompt\": \"Once upon a time\", \"max_tokens\": 40}\n"
                     "{\"prompt\": \"The dog\", \"max_tokens\": 30}\n"
                     "{\"prompt\": \"Lily\", \"max_tokens\": 20}\n");
  const std::vector<std::string> flags = {"--prompts-file", dir.File("prompts.jsonl"),
                                          "--gpu-memory-utilization", "0.5"};
  const CliResult one = GenerateOnGpus(1, flags);
  const CliResult two = GenerateOnGpus(2, flags);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_THAT(two.err, HasSubstr("gpu memory: total"));
  const std::vector<nlohmann::json> want = TokenIds(one.out);
  ASSERT_EQ(want.size(), 3u) << one.out;
  EXPECT_EQ(TokenIds(two.out), want);
}

}  // namespace
}  // namespace kvfold
