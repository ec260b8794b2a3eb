// The OpenAI-compatible API's response side: the JSON objects parse back to what the server put
// in, in the shapes OpenAI's clients read, and SSE frames are exactly "data: ...\n\n".
#include "server/api/openai_response.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvfold::api {
namespace {

using nlohmann::json;

const ResponseHeader kHeader{.id = "cmpl-1", .created = 1700000000, .model = "smol"};

TEST(CompletionJsonTest, FullResponseRoundTrips) {
  std::vector<TokenLogprobText> logprobs = {
      {.token = "He", .logprob = -0.5f, .top = {{"He", -0.5f}, {"She", -1.25f}}, .text_offset = 0},
      {.token = "llo", .logprob = -2.0f, .top = {{"llo", -2.0f}}, .text_offset = 2}};
  const CompletionChoice choices[] = {
      {.index = 0, .text = "Hello", .finish_reason = "length", .logprobs = logprobs},
      {.index = 1, .text = "Bye", .finish_reason = "stop"}};
  const Usage usage{.prompt_tokens = 4, .completion_tokens = 7, .cached_tokens = 2};
  const json j = json::parse(CompletionJson(kHeader, choices, &usage));
  EXPECT_EQ(j["id"], "cmpl-1");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "smol");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["text"], "Hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  const json& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json({"He", "llo"}));
  EXPECT_EQ(lp["token_logprobs"], json({-0.5, -2.0}));
  EXPECT_EQ(lp["top_logprobs"][0]["She"], -1.25);
  EXPECT_EQ(lp["top_logprobs"][1].size(), 1u);
  EXPECT_EQ(lp["text_offset"], json({0, 2}));
  EXPECT_TRUE(j["choices"][1]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(j["usage"]["completion_tokens"], 7);
  EXPECT_EQ(j["usage"]["total_tokens"], 11);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
}

TEST(CompletionJsonTest, PromptLogprobsAndEchoedFirstToken) {
  const PromptLogprobs prompt = {
      {{.token_id = 7, .logprob = -3.0f, .rank = 4, .decoded_token = " cat"},
       {.token_id = 9, .logprob = -0.25f, .rank = 1, .decoded_token = " dog"}}};
  std::vector<TokenLogprobText> echo = {
      {.token = "<s>", .text_offset = 0, .no_logprob = true},
      {.token = " cat", .logprob = -3.0f, .top = {{" dog", -0.25f}}, .text_offset = 3}};
  const CompletionChoice choices[] = {{.index = 0,
                                       .text = "<s> cat",
                                       .finish_reason = "length",
                                       .logprobs = echo,
                                       .prompt_logprobs = prompt},
                                      {.index = 1, .text = "x"}};
  const json j = json::parse(CompletionJson(kHeader, choices, nullptr));
  const json& plp = j["choices"][0]["prompt_logprobs"];
  ASSERT_EQ(plp.size(), 2u);
  EXPECT_TRUE(plp[0].is_null());
  EXPECT_EQ(plp[1]["7"], json({{"logprob", -3.0}, {"rank", 4}, {"decoded_token", " cat"}}));
  EXPECT_EQ(plp[1]["9"]["rank"], 1);
  EXPECT_FALSE(j["choices"][1].contains("prompt_logprobs"));
  const json& lp = j["choices"][0]["logprobs"];
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_EQ(lp["token_logprobs"][1], -3.0);
  EXPECT_EQ(lp["text_offset"], json({0, 3}));

  // Chat: beside "choices".
  const ChatChoice chat[] = {{.index = 0, .content = "hi", .prompt_logprobs = prompt}};
  const json c = json::parse(ChatCompletionJson(kHeader, chat, Usage{}));
  EXPECT_EQ(c["prompt_logprobs"], plp);
  EXPECT_FALSE(c["choices"][0].contains("prompt_logprobs"));
}

TEST(CompletionJsonTest, ChunksAndUsage) {
  const CompletionChoice chunk[] = {{.index = 0, .text = "Hel"}};
  json j = json::parse(CompletionJson(kHeader, chunk, nullptr));
  EXPECT_TRUE(j["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(j.contains("usage"));
  j = json::parse(CompletionJson(kHeader, chunk, nullptr, /*include_usage=*/true));
  EXPECT_TRUE(j.contains("usage"));
  EXPECT_TRUE(j["usage"].is_null());
  const Usage usage{.prompt_tokens = 1, .completion_tokens = 2};
  j = json::parse(CompletionJson(kHeader, {}, &usage, true));
  EXPECT_TRUE(j["choices"].empty());
  EXPECT_EQ(j["usage"]["total_tokens"], 3);
  EXPECT_EQ(json::parse(UsageJson(usage)), j["usage"]);
}

TEST(ChatCompletionJsonTest, FullResponseRoundTrips) {
  std::vector<TokenLogprobText> logprobs = {
      {.token = "\xc3\xa9", .logprob = -0.1f, .top = {{"\xc3\xa9", -0.1f}, {"e", -3.0f}}}};
  const ChatChoice choices[] = {
      {.index = 0, .content = "\xc3\xa9t\xc3\xa9", .finish_reason = "stop", .logprobs = logprobs},
      {.index = 1, .content = "half \xe2\x82", .finish_reason = "length"}};
  const Usage usage{.prompt_tokens = 9, .completion_tokens = 3};
  const json j = json::parse(ChatCompletionJson(kHeader, choices, usage));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "\xc3\xa9t\xc3\xa9");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  const json& token = j["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(token["token"], "\xc3\xa9");
  EXPECT_FLOAT_EQ(token["logprob"].get<float>(), -0.1f);
  EXPECT_EQ(token["bytes"], json({0xc3, 0xa9}));
  EXPECT_EQ(token["top_logprobs"][1]["token"], "e");
  EXPECT_EQ(token["top_logprobs"][1]["bytes"], json({'e'}));
  EXPECT_EQ(token["top_logprobs"][1]["logprob"], -3.0);
  // A character cut in half is replaced, not thrown.
  EXPECT_EQ(j["choices"][1]["message"]["content"], "half \xEF\xBF\xBD");
  EXPECT_TRUE(j["choices"][1]["logprobs"].is_null());
  EXPECT_EQ(j["usage"]["total_tokens"], 12);
}

TEST(ChatChunkJsonTest, DeltasFinishAndUsage) {
  const ChatChoice first[] = {{.index = 0, .role = "assistant", .content = ""}};
  json j = json::parse(ChatChunkJson(kHeader, first, nullptr, false));
  EXPECT_EQ(j["object"], "chat.completion.chunk");
  EXPECT_EQ(j["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(j["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(j.contains("usage"));

  const ChatChoice middle[] = {{.index = 1, .content = "lo"}};
  j = json::parse(ChatChunkJson(kHeader, middle, nullptr, true));
  EXPECT_EQ(j["choices"][0]["index"], 1);
  EXPECT_EQ(j["choices"][0]["delta"], json({{"content", "lo"}}));
  EXPECT_TRUE(j["usage"].is_null());

  const ChatChoice last[] = {{.index = 0, .finish_reason = "stop"}};
  j = json::parse(ChatChunkJson(kHeader, last, nullptr, true));
  EXPECT_EQ(j["choices"][0]["delta"], json::object());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");

  const Usage usage{.prompt_tokens = 5, .completion_tokens = 6, .cached_tokens = 1};
  j = json::parse(ChatChunkJson(kHeader, {}, &usage, true));
  EXPECT_TRUE(j["choices"].empty());
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
}

TEST(SseTest, Framing) {
  EXPECT_EQ(SseEvent(R"({"a":1})"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(SseDone(), "data: [DONE]\n\n");
  // A chunk is one line: its JSON has no raw newline even when the text has one.
  const ChatChoice c[] = {{.index = 0, .content = "a\nb"}};
  const std::string event = SseEvent(ChatChunkJson(kHeader, c, nullptr, false));
  EXPECT_EQ(event.find('\n'), event.size() - 2);
  EXPECT_EQ(json::parse(event.substr(6))["choices"][0]["delta"]["content"], "a\nb");
}

}  // namespace
}  // namespace kvfold::api
