// `--device cuda` through the real binary: without a usable GPU (or in a build without CUDA) a
// one-line error and a non-zero exit, never a crash; with one, greedy tokens equal to the CPU's on
// stories260K, through the single-sequence path and through the engine with its GPU memory plan.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/cli_runner.h"
#include "tests/testing/paths.h"
#ifdef KVFOLD_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace kvfold {
namespace {

using ::testing::AnyOf;
using testing::CliResult;
using ::testing::HasSubstr;
using testing::RunKvfold;

bool GpuAvailable() {
#ifdef KVFOLD_HAVE_CUDA
  return CudaDeviceAvailable();
#else
  return false;
#endif
}

std::string Stories() { return testing::StoriesPath(); }

int Lines(const std::string& text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

// The reason a CUDA run cannot start here, as the binary words it.
::testing::Matcher<const std::string&> NoCudaReason() {
  return AnyOf(HasSubstr("built without CUDA"), HasSubstr("no CUDA device"));
}

TEST(DeviceCliTest, UnknownDeviceIsAUsageError) {
  CliResult r = RunKvfold({"generate", "--model", Stories(), "--device", "tpu"});
  ASSERT_TRUE(r.exited);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--device tpu: expected cpu or cuda"));
}

TEST(DeviceCliTest, CudaWithoutAUsableGpuIsAOneLineError) {
  if (GpuAvailable()) GTEST_SKIP() << "a GPU is visible: the CUDA runs are checked below";
  const std::string data = testing::SourcePath("tests/data/stories260K_sample.txt");
  const std::vector<std::vector<std::string>> commands = {
      {"generate", "--model", Stories(), "--device", "cuda", "--max-tokens", "4"},
      {"serve", "--model", Stories(), "--device", "cuda", "--port", "0", "--grpc-port", "0"},
      {"eval", "--model", Stories(), "--device", "cuda", "--data", data},
  };
  for (const std::vector<std::string>& args : commands) {
    SCOPED_TRACE(args[0]);
    CliResult r = RunKvfold(args);
    ASSERT_TRUE(r.exited) << "killed by a signal: " << r.err;
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr("kvfold " + args[0] + ": --device cuda: "));
    EXPECT_THAT(r.err, NoCudaReason());
    EXPECT_EQ(r.out, "");
  }
}

// --device cuda with --tensor-parallel-size > 1: tensor_parallel_cuda_cli_test.cc.

TEST(DeviceCliTest, CalibrateRefusesCuda) {
  CliResult r = RunKvfold({"calibrate", "--model", Stories(), "--device", "cuda", "--data",
                           testing::SourcePath("tests/data/stories260K_sample.txt"), "--out",
                           ::testing::TempDir() + "/device_cli_plan.json"});
  ASSERT_TRUE(r.exited);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("calibrate runs on the CPU only"));
}

TEST(DeviceCliTest, CudaGreedyEqualsCpu) {
  if (!GpuAvailable()) GTEST_SKIP() << "no CUDA device";
  // F32 K/V on both: the backends' sums differ in order, so a BF16 cache could flip a near-tie.
  auto run = [](const std::string& device) {
    return RunKvfold({"generate", "--model", Stories(), "--device", device, "--prompt",
                      "Once upon a time", "--max-tokens", "64", "--kv-cache-dtype", "f32"});
  };
  CliResult cpu = run("cpu");
  CliResult gpu = run("cuda");
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
  EXPECT_GT(cpu.out.size(), std::string("Once upon a time").size() + 40);
  EXPECT_EQ(gpu.out, cpu.out);
}

std::string WritePrompts() {
  const std::string path =
      ::testing::TempDir() + "/device_cli_prompts_" + std::to_string(getpid()) + ".jsonl";
  std::ofstream(path) << R"({"prompt": "Once upon a time", "max_tokens": 40})"
                      << "\n"
                      << R"({"prompt": "The dog", "max_tokens": 30})"
                      << "\n"
                      << R"({"prompt": "Lily", "max_tokens": 20})"
                      << "\n";
  return path;
}

std::vector<nlohmann::json> TokenIds(const std::string& out) {
  std::vector<nlohmann::json> ids;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) ids.push_back(nlohmann::json::parse(line)["token_ids"]);
  }
  return ids;
}

TEST(DeviceCliTest, CudaEnginePlansGpuMemoryAndEqualsCpu) {
  if (!GpuAvailable()) GTEST_SKIP() << "no CUDA device";
  const std::string path = WritePrompts();
  auto run = [&path](const std::string& device, std::vector<std::string> extra) {
    std::vector<std::string> args = {"generate", "--model",        Stories(), "--device",
                                     device,     "--prompts-file", path,      "--kv-cache-dtype",
                                     "f32"};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunKvfold(args);
  };
  CliResult cpu = run("cpu", {});
  CliResult gpu = run("cuda", {"--gpu-memory-utilization", "0.5"});
  CliResult sized = run("cuda", {"--kv-cache-memory", "4MiB"});
  std::remove(path.c_str());
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
  ASSERT_EQ(sized.exit_code, 0) << sized.err;
  EXPECT_THAT(cpu.err, ::testing::Not(HasSubstr("gpu memory:")));
  EXPECT_THAT(gpu.err, HasSubstr("gpu memory: total"));
  EXPECT_THAT(gpu.err, HasSubstr("utilization 0.50"));
  EXPECT_THAT(sized.err, HasSubstr("(--kv-cache-memory)"));
  EXPECT_THAT(sized.err, HasSubstr("KV pool 4.00 MiB"));
  const std::vector<nlohmann::json> want = TokenIds(cpu.out);
  ASSERT_EQ(want.size(), 3u) << cpu.out;
  EXPECT_EQ(TokenIds(gpu.out), want);
  EXPECT_EQ(TokenIds(sized.out), want);
}

TEST(DeviceCliTest, CudaUtilizationTooLowForTheWeightsIsAClearError) {
  if (!GpuAvailable()) GTEST_SKIP() << "no CUDA device";
  CliResult r = RunKvfold({"generate", "--model", Stories(), "--device", "cuda", "--prompts-file",
                           "/dev/null", "--gpu-memory-utilization", "0.0001"});
  ASSERT_TRUE(r.exited) << r.err;
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("raise --gpu-memory-utilization"));
}

}  // namespace
}  // namespace kvfold
