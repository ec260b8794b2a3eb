#include "server/serving/chat_prompt.h"

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/cli/command.h"
#include "tests/testing/paths.h"

namespace kvfold::serving {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& path) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromFile(path);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

TEST(ChatPromptTest, AFolderWithoutATemplateIsNotFound) {
  const std::string model = testing::SourcePath("models/stories260K");
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(model);
  ASSERT_NE(tokenizer, nullptr);
  absl::StatusOr<ChatPrompt> prompt = ChatPrompt::ForModel(model, "", *tokenizer);
  EXPECT_EQ(prompt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(prompt.status().message(), HasSubstr("chat_template"));
}

TEST(ChatPromptTest, OverrideFileRendersWithTheTokenizersBos) {
  const std::string model = testing::SourcePath("models/stories260K");
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(model);
  ASSERT_NE(tokenizer, nullptr);
  absl::StatusOr<ChatPrompt> prompt = ChatPrompt::ForModel(
      model, testing::SourcePath("tests/fixtures/chat/templates/llama2.jinja"), *tokenizer);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_THAT(prompt->origin(), HasSubstr("--chat-template"));
  absl::StatusOr<std::string> text =
      prompt->Render({{.role = "user", .content = "Hello there"}}, true);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<s>[INST] Hello there [/INST]");
  // Llama 2's template refuses roles that do not alternate.
  absl::StatusOr<std::string> bad =
      prompt->Render({{.role = "user", .content = "a"}, {.role = "user", .content = "b"}}, true);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatPromptTest, TheDefaultGgufCarriesItsTemplate) {
  const std::string gguf = cli::DefaultModelFile();
  if (!std::filesystem::exists(gguf)) GTEST_SKIP() << gguf << " is absent (scripts/setup.sh)";
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(gguf);
  ASSERT_NE(tokenizer, nullptr);
  absl::StatusOr<ChatPrompt> prompt = ChatPrompt::ForModel(gguf, "", *tokenizer);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(prompt->origin(), "GGUF metadata");
  absl::StatusOr<std::string> text = prompt->Render({{.role = "user", .content = "Hi"}}, true);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
}

TEST(ChatPromptTest, ABrokenTemplateNamesWhereItCameFrom) {
  const std::string model = testing::SourcePath("models/stories260K");
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(model);
  ASSERT_NE(tokenizer, nullptr);
  const std::string path = ::testing::TempDir() + "/broken.jinja";
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs("{% for m in messages %}{{ m.content }", f);
  fclose(f);
  absl::StatusOr<ChatPrompt> prompt = ChatPrompt::ForModel(model, path, *tokenizer);
  EXPECT_EQ(prompt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(prompt.status().message(), HasSubstr("--chat-template"));
}

}  // namespace
}  // namespace kvfold::serving
