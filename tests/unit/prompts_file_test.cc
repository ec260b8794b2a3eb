// The --prompts-file edge: each line becomes native values or a clear per-line error, and every
// result prints as one line of valid JSON.
#include "server/cli/prompts_file.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvfold::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParsePromptLineTest, AllFields) {
  absl::StatusOr<PromptLine> p = ParsePromptLine(
      R"({"prompt": "Once", "max_tokens": 8, "temperature": 0.5, "seed": 7, "stop": ["a", "b"],
          "unknown": {"ignored": true}})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->prompt, "Once");
  EXPECT_EQ(p->max_tokens, 8);
  EXPECT_EQ(p->temperature, 0.5f);
  EXPECT_EQ(p->seed, 7u);
  EXPECT_THAT(p->stop, ElementsAre("a", "b"));
}

TEST(ParsePromptLineTest, OptionalFieldsMayBeAbsentOrNull) {
  absl::StatusOr<PromptLine> p = ParsePromptLine(R"({"prompt": "", "seed": null, "stop": "x"})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->max_tokens.has_value());
  EXPECT_FALSE(p->temperature.has_value());
  EXPECT_FALSE(p->seed.has_value());
  EXPECT_THAT(p->stop, ElementsAre("x"));
  EXPECT_TRUE(ParsePromptLine(R"({"prompt": "a", "temperature": 1})").ok());
}

TEST(ParsePromptLineTest, BadLinesNameTheProblem) {
  const std::pair<const char*, const char*> cases[] = {
      {"not json", "not valid JSON"},
      {R"({"prompt": "a")", "not valid JSON"},
      {R"(["prompt"])", "JSON object"},
      {R"({"text": "a"})", "'prompt'"},
      {R"({"prompt": 5})", "'prompt'"},
      {R"({"prompt": "a", "max_tokens": 0})", "'max_tokens'"},
      {R"({"prompt": "a", "max_tokens": 1.5})", "'max_tokens'"},
      {R"({"prompt": "a", "max_tokens": "8"})", "'max_tokens'"},
      {R"({"prompt": "a", "max_tokens": 99999999999})", "'max_tokens'"},
      {R"({"prompt": "a", "temperature": -1})", "'temperature'"},
      {R"({"prompt": "a", "temperature": "hot"})", "'temperature'"},
      {R"({"prompt": "a", "seed": -3})", "'seed'"},
      {R"({"prompt": "a", "seed": 1.5})", "'seed'"},
      {R"({"prompt": "a", "stop": 3})", "'stop'"},
      {R"({"prompt": "a", "stop": ["x", 3]})", "'stop'"},
  };
  for (const auto& [line, want] : cases) {
    absl::StatusOr<PromptLine> p = ParsePromptLine(line);
    ASSERT_FALSE(p.ok()) << line;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(p.status().message(), HasSubstr(want)) << line;
  }
}

TEST(FormatLineResultTest, ResultAndErrorLines) {
  LineResult r;
  r.line = 3;
  r.text = "hi \xff there";  // invalid UTF-8 is replaced, not thrown
  r.token_ids = {5, 6};
  r.finish_reason = "length";
  r.usage = {4, 2, 0};
  r.ttft_ms = 1.23456;
  const nlohmann::json j = nlohmann::json::parse(FormatLineResult(r));
  EXPECT_EQ(j["line"], 3);
  EXPECT_EQ(j["text"], "hi \xEF\xBF\xBD there");
  EXPECT_EQ(j["token_ids"], nlohmann::json({5, 6}));
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(j["usage"]["completion_tokens"], 2);
  EXPECT_DOUBLE_EQ(j["ttft_ms"].get<double>(), 1.235);

  LineResult e;
  e.line = 4;
  e.error = "'prompt' must be a string";
  const nlohmann::json je = nlohmann::json::parse(FormatLineResult(e));
  EXPECT_EQ(je["error"]["message"], e.error);
  EXPECT_EQ(je["error"]["type"], "invalid_request_error");
  EXPECT_FALSE(je.contains("text"));
}

}  // namespace
}  // namespace kvfold::cli
