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

TEST(ParsePromptLineTest, SamplingFields) {
  absl::StatusOr<PromptLine> p = ParsePromptLine(
      R"({"prompt": "a", "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.1,
          "frequency_penalty": 0.5, "presence_penalty": -0.5, "logit_bias": {"42": -100, "7": 2},
          "logprobs": true, "top_logprobs": 3, "stop_token_ids": [2, 9], "ignore_eos": true})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->top_k, 40);
  EXPECT_EQ(p->top_p, 0.9f);
  EXPECT_EQ(p->min_p, 0.05f);
  EXPECT_EQ(p->repetition_penalty, 1.1f);
  EXPECT_EQ(p->frequency_penalty, 0.5f);
  EXPECT_EQ(p->presence_penalty, -0.5f);
  EXPECT_THAT(p->logit_bias,
              ::testing::UnorderedElementsAre(std::pair(42, -100.0f), std::pair(7, 2.0f)));
  EXPECT_EQ(p->logprobs, true);
  EXPECT_EQ(p->top_logprobs, 3);
  EXPECT_THAT(p->stop_token_ids, ElementsAre(2, 9));
  EXPECT_EQ(p->ignore_eos, true);
}

TEST(FormatLineResultTest, LogprobsWhenAsked) {
  LineResult r;
  r.line = 1;
  r.token_ids = {5};
  r.logprobs = {TokenLogprob{.token_id = 5, .logprob = -0.5f, .top = {{5, -0.5f}, {9, -1.5f}}}};
  const nlohmann::json j = nlohmann::json::parse(FormatLineResult(r));
  ASSERT_EQ(j["logprobs"].size(), 1u);
  EXPECT_EQ(j["logprobs"][0]["token_id"], 5);
  EXPECT_EQ(j["logprobs"][0]["logprob"], -0.5);
  EXPECT_EQ(j["logprobs"][0]["top_logprobs"][1]["token_id"], 9);
  EXPECT_EQ(j["logprobs"][0]["top_logprobs"][1]["logprob"], -1.5);
  r.logprobs.clear();
  EXPECT_FALSE(nlohmann::json::parse(FormatLineResult(r)).contains("logprobs"));
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
      {R"({"prompt": "a", "top_k": 1.5})", "'top_k'"},
      {R"({"prompt": "a", "top_p": "high"})", "'top_p'"},
      {R"({"prompt": "a", "min_p": [0.1]})", "'min_p'"},
      {R"({"prompt": "a", "repetition_penalty": true})", "'repetition_penalty'"},
      {R"({"prompt": "a", "frequency_penalty": "x"})", "'frequency_penalty'"},
      {R"({"prompt": "a", "presence_penalty": {}})", "'presence_penalty'"},
      {R"({"prompt": "a", "logit_bias": [1, 2]})", "'logit_bias'"},
      {R"({"prompt": "a", "logit_bias": {"x": 1}})", "'logit_bias'"},
      {R"({"prompt": "a", "logit_bias": {"3": "1"}})", "'logit_bias'"},
      {R"({"prompt": "a", "logprobs": 1})", "'logprobs'"},
      {R"({"prompt": "a", "top_logprobs": "3"})", "'top_logprobs'"},
      {R"({"prompt": "a", "stop_token_ids": 2})", "'stop_token_ids'"},
      {R"({"prompt": "a", "stop_token_ids": [2.5]})", "'stop_token_ids'"},
      {R"({"prompt": "a", "ignore_eos": "yes"})", "'ignore_eos'"},
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
