// Drives the real `kvfold` binary as a user would: help, generation, bad input.
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
#include "server/cli/command.h"
#include "tests/testing/cli_runner.h"
#include "tests/testing/paths.h"

namespace kvfold {
namespace {

using testing::CliResult;
using ::testing::HasSubstr;
using testing::RunKvfold;
using ::testing::StartsWith;

// The bundled model; tests that check its text or sizes name it (the default is SmolLM2 when
// ~/.cache/kvfold has it).
std::string Stories() { return testing::StoriesPath(); }

TEST(GenerateCliTest, HelpListsCommandsAndFlags) {
  CliResult top = RunKvfold({"--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_THAT(top.out, HasSubstr("generate"));
  CliResult gen = RunKvfold({"generate", "--help"});
  EXPECT_THAT(gen.out + gen.err, HasSubstr("--prompt"));
  EXPECT_THAT(gen.out + gen.err, HasSubstr("--max_tokens"));
  EXPECT_THAT(gen.out + gen.err, ::testing::Not(HasSubstr("--gtest")));
}

TEST(GenerateCliTest, StreamsAContinuationAndReportsSpeed) {
  CliResult r = RunKvfold(
      {"generate", "--model", Stories(), "--prompt", "Once upon a time", "--max-tokens", "30"});
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
  // llama2.c keeps K/V in F32; a BF16 cache may flip a near-tie over 200 greedy tokens.
  CliResult r =
      RunKvfold({"generate", "--model", model, "--max-tokens", "200", "--kv-cache-dtype", "f32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string expected = testing::ReadFile(expected_path);
  std::string got = r.out;
  while (!got.empty() && got.back() == '\n') got.pop_back();
  while (!expected.empty() && expected.back() == '\n') expected.pop_back();
  EXPECT_EQ(got, expected);
}

TEST(GenerateCliTest, SameSeedSameText) {
  const std::vector<std::string> args = {"generate", "--model",      Stories(), "--prompt",
                                         "The dog",  "--max-tokens", "40",      "--temperature",
                                         "0.9",      "--seed",       "7"};
  CliResult a = RunKvfold(args), b = RunKvfold(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  std::vector<std::string> other = args;
  other.back() = "8";
  EXPECT_NE(RunKvfold(other).out, a.out) << "a different seed should change 40 sampled tokens";
}

TEST(GenerateCliTest, BadInputGetsAClearErrorAndNonZeroExit) {
  CliResult unknown = RunKvfold({"frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.err, HasSubstr("unknown command 'frobnicate'"));

  CliResult missing = RunKvfold({"generate", "--model", "/nonexistent/model", "--max-tokens", "1"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent/model"));

  CliResult zero = RunKvfold({"generate", "--model", Stories(), "--max-tokens", "0"});
  EXPECT_EQ(zero.exit_code, 2);

  std::string too_long;
  for (int i = 0; i < 600; ++i) too_long += "dog ";
  CliResult overlong =
      RunKvfold({"generate", "--model", Stories(), "--prompt", too_long, "--max-tokens", "1"});
  EXPECT_EQ(overlong.exit_code, 1);
  EXPECT_THAT(overlong.err, HasSubstr("context"));
}

// A per-process temp file holding `text`.
std::string WriteTempFile(const std::string& name, const std::string& text) {
  const std::string path =
      ::testing::TempDir() + "/" + name + "_" + std::to_string(getpid()) + ".jsonl";
  std::ofstream(path) << text;
  return path;
}

std::vector<nlohmann::json> JsonLines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    lines.push_back(nlohmann::json::parse(line, nullptr, false));
    EXPECT_FALSE(lines.back().is_discarded()) << line;
  }
  return lines;
}

TEST(GenerateCliTest, PromptsFileRunsEveryLineThroughTheEngineInOrder) {
  std::string too_long = R"({"prompt": ")";
  for (int i = 0; i < 600; ++i) too_long += "dog ";
  too_long += R"(", "max_tokens": 4})";
  const std::string path = WriteTempFile(
      "prompts", std::string(R"({"prompt": "Once upon a time", "max_tokens": 24})") + "\n" +
                     "{not json\n" +
                     R"({"prompt": "Once upon a time", "max_tokens": 60, "stop": ". "})" + "\n" +
                     "\n" + too_long + "\n" +
                     R"({"prompt": "The dog", "max_tokens": 40, "temperature": 0.9, "seed": 7})" +
                     "\n" + R"({"prompt": "Lily", "max_tokens": "many"})" + "\n");
  CliResult r =
      RunKvfold({"generate", "--model", Stories(), "--prompts-file", path, "--kv-cache-memory",
                 "2MiB", "--max-num-seqs", "2", "--max-num-batched-tokens", "16"});
  std::remove(path.c_str());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<nlohmann::json> lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 6u) << r.out;  // one per non-blank line, in input order
  const int want_line[] = {1, 2, 3, 5, 6, 7};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(lines[i]["line"], want_line[i]);

  // The engine's greedy text equals the single-sequence path's.
  CliResult single = RunKvfold(
      {"generate", "--model", Stories(), "--prompt", "Once upon a time", "--max-tokens", "24"});
  ASSERT_EQ(single.exit_code, 0) << single.err;
  EXPECT_EQ("Once upon a time" + lines[0]["text"].get<std::string>() + "\n", single.out);
  EXPECT_EQ(lines[0]["finish_reason"], "length");
  EXPECT_EQ(lines[0]["token_ids"].size(), 24u);
  EXPECT_EQ(lines[0]["usage"]["completion_tokens"], 24);
  EXPECT_EQ(lines[0]["usage"]["prompt_tokens"], 5);
  EXPECT_GE(lines[0]["latency_ms"].get<double>(), lines[0]["ttft_ms"].get<double>());

  EXPECT_THAT(lines[1]["error"]["message"].get<std::string>(), HasSubstr("JSON"));

  // The stop string ends the request: text cut before it, finish reason stop.
  const std::string stopped = lines[2]["text"];
  EXPECT_EQ(lines[2]["finish_reason"], "stop");
  EXPECT_THAT(stopped, ::testing::Not(HasSubstr(". ")));
  EXPECT_EQ(lines[0]["text"].get<std::string>().rfind(stopped, 0), 0u) << "same greedy prefix";
  EXPECT_LT(lines[2]["token_ids"].size(), 60u);

  EXPECT_THAT(lines[3]["error"]["message"].get<std::string>(), HasSubstr("512"));
  EXPECT_EQ(lines[4]["finish_reason"], "length");
  EXPECT_EQ(lines[4]["token_ids"].size(), 40u);
  EXPECT_THAT(lines[5]["error"]["message"].get<std::string>(), HasSubstr("max_tokens"));
  EXPECT_THAT(r.err, HasSubstr("6 requests (3 failed)"));
  EXPECT_THAT(r.err, HasSubstr("output tokens/s"));
  EXPECT_THAT(r.err, HasSubstr("kv pool: "));
}

TEST(GenerateCliTest, PromptsFileErrorsBeforeRunning) {
  const std::string path = WriteTempFile("prompts_small", R"({"prompt": "a"})"
                                                          "\n");
  CliResult small = RunKvfold(
      {"generate", "--model", Stories(), "--prompts-file", path, "--kv-cache-memory", "10KiB"});
  EXPECT_EQ(small.exit_code, 1);
  EXPECT_THAT(small.err, HasSubstr("--kv-cache-memory"));
  CliResult bad_size = RunKvfold(
      {"generate", "--model", Stories(), "--prompts-file", path, "--kv-cache-memory", "lots"});
  EXPECT_EQ(bad_size.exit_code, 1);
  EXPECT_THAT(bad_size.err, HasSubstr("byte size"));
  CliResult bad_len = RunKvfold(
      {"generate", "--model", Stories(), "--prompts-file", path, "--max-model-len", "9999"});
  EXPECT_EQ(bad_len.exit_code, 1);
  EXPECT_THAT(bad_len.err, HasSubstr("--max-model-len"));
  CliResult both = RunKvfold(
      {"generate", "--model", Stories(), "--prompts-file", path, "--prompt", "Once upon"});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_THAT(both.err, HasSubstr("exclude each other"));
  std::remove(path.c_str());
  CliResult missing = RunKvfold({"generate", "--prompts-file", path});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr(path));
}

TEST(GenerateCliTest, CorruptWeightsAreReportedNotCrashed) {
  const std::string dir = ::testing::TempDir() + "/corrupt_model_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json"}) {
    std::ifstream in(testing::SourcePath(std::string("models/stories260K/") + f));
    std::ofstream(dir + "/" + f) << in.rdbuf();
  }
  std::string weights =
      testing::ReadFile(testing::SourcePath("models/stories260K/model.safetensors"));
  std::ofstream(dir + "/model.safetensors") << weights.substr(0, weights.size() / 2);
  CliResult r = RunKvfold({"generate", "--model", dir, "--max-tokens", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("model.safetensors"));
}

// With no --model, the default model (SmolLM2, Q4_1 GGUF) answers in English.
TEST(GenerateCliTest, DefaultModelIsSmolLm2AndAnswers) {
  const std::string gguf = cli::DefaultModelFile();
  if (!std::filesystem::exists(gguf)) GTEST_SKIP() << gguf << " is absent (scripts/setup.sh)";
  CliResult r =
      RunKvfold({"generate", "--prompt", "The capital of France is", "--max-tokens", "20"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("The capital of France is Paris"));
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("absent")));
  CliResult named = RunKvfold(
      {"generate", "--model", gguf, "--prompt", "The capital of France is", "--max-tokens", "20"});
  ASSERT_EQ(named.exit_code, 0) << named.err;
  EXPECT_EQ(named.out, r.out);
}

// A .gguf given with --model (the CI-sized fixture) loads weights and tokenizer from the file.
TEST(GenerateCliTest, GgufModelFile) {
  CliResult r = RunKvfold({"generate", "--model",
                           testing::SourcePath("tests/fixtures/gguf/stories260K_spm.gguf"),
                           "--max-tokens", "1"});
  // This fixture has a vocabulary but no weights: the error names the file and the tensor.
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("stories260K_spm.gguf"));
}

TEST(GenerateCliTest, CorruptGgufIsReportedNotCrashed) {
  const std::string path = ::testing::TempDir() + "/corrupt_" + std::to_string(getpid()) + ".gguf";
  const std::string bytes =
      testing::ReadFile(testing::SourcePath("tests/fixtures/gguf/tiny-llama-linear.f32.gguf"));
  std::ofstream(path) << bytes.substr(0, bytes.size() / 2);
  CliResult r = RunKvfold({"generate", "--model", path, "--max-tokens", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(path));
  EXPECT_THAT(r.err, HasSubstr("past the end"));
  std::ofstream(path) << "GGUF\x01";
  CliResult tiny = RunKvfold({"generate", "--model", path, "--max-tokens", "1"});
  EXPECT_EQ(tiny.exit_code, 1);
  EXPECT_THAT(tiny.err, HasSubstr(path));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvfold
