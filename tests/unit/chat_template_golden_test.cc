// The C++ chat template interpreter against Python jinja2: every template over every committed
// conversation must render byte-identically, and fail where jinja2 fails (with the same message
// for raise_exception). Expectations: scripts/dev/make_chat_template_expectations.py.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "nlohmann/json.hpp"
#include "server/chat/chat_template.h"
#include "server/cli/command.h"
#include "tests/testing/paths.h"
#include "worker/gguf_metadata.h"

namespace kvfold::chat {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Json ReadJson(const std::string& path) { return Json::parse(ReadFile(path)); }

// Renders `source` over every conversation and compares with expected.json's `name` entry.
void CheckTemplate(const std::string& name, const std::string& source) {
  const Json conversations =
      ReadJson(testing::SourcePath("tests/fixtures/chat/conversations.json"))["conversations"];
  const Json expected = ReadJson(testing::SourcePath("tests/fixtures/chat/expected.json"))[name];
  ASSERT_FALSE(expected.is_null()) << name;

  auto parsed = ChatTemplate::Parse(source);
  ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status();
  int checked = 0;
  for (const Json& conversation : conversations) {
    const std::string conv = conversation["name"];
    Json context = {{"tools", nullptr},
                    {"documents", nullptr},
                    {"bos_token", expected["bos_token"]},
                    {"eos_token", expected["eos_token"]}};
    for (const auto& [k, v] : conversation.items()) {
      if (k != "name") context[k] = v;
    }
    const Json& want = expected["cases"][conv];
    auto got = parsed->Render(context);
    if (want.contains("output")) {
      ASSERT_TRUE(got.ok()) << name << "/" << conv << ": " << got.status();
      EXPECT_EQ(*got, want["output"].get<std::string>()) << name << "/" << conv;
    } else {
      EXPECT_FALSE(got.ok()) << name << "/" << conv << " should fail like jinja2: " << want;
      if (want.contains("raise_exception") && !got.ok()) {
        EXPECT_THAT(std::string(got.status().message()),
                    HasSubstr(want["raise_exception"].get<std::string>()))
            << name << "/" << conv;
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(expected["cases"].size())) << name;
}

std::string SharedTemplate(const std::string& config_path) {
  return ReadJson(config_path)["chat_template"].get<std::string>();
}

TEST(ChatTemplateGoldenTest, Llama3) {
  KVFOLD_REQUIRE_SHARED(config, "tokenizers/llama3/tokenizer_config.json");
  CheckTemplate("llama3", SharedTemplate(config));
}

TEST(ChatTemplateGoldenTest, Qwen3) {
  KVFOLD_REQUIRE_SHARED(config, "tokenizers/qwen3/tokenizer_config.json");
  CheckTemplate("qwen3", SharedTemplate(config));
}

// Llama 2's and Mistral's shared tokenizer configs have no chat_template: the published ones are
// committed in tests/fixtures/chat/templates/.
TEST(ChatTemplateGoldenTest, Llama2) {
  CheckTemplate("llama2",
                ReadFile(testing::SourcePath("tests/fixtures/chat/templates/llama2.jinja")));
}

TEST(ChatTemplateGoldenTest, Mistral) {
  CheckTemplate("mistral",
                ReadFile(testing::SourcePath("tests/fixtures/chat/templates/mistral.jinja")));
}

TEST(ChatTemplateGoldenTest, SmolLM2FromGguf) {
  const std::string path = cli::DefaultModelFile();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent; skipped";
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto source = (*file)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(source.ok()) << source.status();
  CheckTemplate("smollm2", *source);
}

}  // namespace
}  // namespace kvfold::chat
