// The OpenAI-compatible API's request edge: every field and every accepted shape reads into the
// plain structs, and every bad body becomes a 400 naming the field, with a readable message.
#include "server/api/openai_request.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/api/api_error.h"

namespace kvfold::api {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

TEST(CompletionRequestTest, EveryField) {
  ApiOr<CompletionRequest> r = ParseCompletionRequest(R"({
      "model": "smol", "prompt": "Once upon", "n": 3, "stop": ["\n", "END"], "seed": 42,
      "max_tokens": 17, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
      "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1,
      "logit_bias": {"42": -100, "7": 2.5}, "logprobs": 3, "prompt_logprobs": 2, "echo": true,
      "ignore_eos": true, "user": "u-1", "stream": true, "stream_options": {"include_usage": true},
      "stop_token_ids": [2, 9]})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->model, "smol");
  ASSERT_EQ(r->prompts.size(), 1u);
  EXPECT_FALSE(r->prompts[0].is_tokens);
  EXPECT_EQ(r->prompts[0].text, "Once upon");
  EXPECT_EQ(r->n, 3);
  EXPECT_THAT(r->sampling.stop, ElementsAre("\n", "END"));
  EXPECT_EQ(r->sampling.seed, 42u);
  EXPECT_EQ(r->sampling.max_tokens, 17);
  EXPECT_EQ(r->sampling.temperature, 0.7f);
  EXPECT_EQ(r->sampling.top_p, 0.9f);
  EXPECT_EQ(r->sampling.top_k, 40);
  EXPECT_EQ(r->sampling.min_p, 0.05f);
  EXPECT_EQ(r->sampling.presence_penalty, 0.5f);
  EXPECT_EQ(r->sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(r->sampling.repetition_penalty, 1.1f);
  EXPECT_THAT(r->sampling.logit_bias, UnorderedElementsAre(Pair(42, -100.0f), Pair(7, 2.5f)));
  EXPECT_EQ(r->sampling.logprobs, true);
  EXPECT_EQ(r->sampling.top_logprobs, 3);
  EXPECT_EQ(r->prompt_logprobs, 2);
  EXPECT_TRUE(r->echo);
  EXPECT_EQ(r->sampling.ignore_eos, true);
  EXPECT_EQ(r->user, "u-1");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_THAT(r->sampling.stop_token_ids, ElementsAre(2, 9));
  EXPECT_THAT(r->unknown_fields, IsEmpty());
}

TEST(CompletionRequestTest, DefaultsWhenAbsentOrNull) {
  ApiOr<CompletionRequest> r = ParseCompletionRequest(
      R"({"model": "m", "prompt": "", "n": null, "stop": null, "temperature": null,
          "logprobs": null, "stream_options": null})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->n, 1);
  EXPECT_FALSE(r->stream);
  EXPECT_FALSE(r->include_usage);
  EXPECT_FALSE(r->echo);
  EXPECT_FALSE(r->user.has_value());
  EXPECT_FALSE(r->prompt_logprobs.has_value());
  EXPECT_FALSE(r->sampling.max_tokens.has_value());
  EXPECT_FALSE(r->sampling.temperature.has_value());
  EXPECT_FALSE(r->sampling.seed.has_value());
  EXPECT_FALSE(r->sampling.logprobs.has_value());
  EXPECT_FALSE(r->sampling.top_logprobs.has_value());
  EXPECT_THAT(r->sampling.stop, IsEmpty());
  ASSERT_EQ(r->prompts.size(), 1u);
  EXPECT_EQ(r->prompts[0].text, "");
}

TEST(CompletionRequestTest, EveryPromptShape) {
  ApiOr<CompletionRequest> strings =
      ParseCompletionRequest(R"({"model": "m", "prompt": ["a", "b c", ""]})");
  ASSERT_TRUE(strings.ok()) << strings.error().message;
  ASSERT_EQ(strings->prompts.size(), 3u);
  EXPECT_EQ(strings->prompts[1].text, "b c");
  EXPECT_FALSE(strings->prompts[2].is_tokens);

  ApiOr<CompletionRequest> ids = ParseCompletionRequest(R"({"model": "m", "prompt": [1, 0, 7]})");
  ASSERT_TRUE(ids.ok()) << ids.error().message;
  ASSERT_EQ(ids->prompts.size(), 1u);
  EXPECT_TRUE(ids->prompts[0].is_tokens);
  EXPECT_THAT(ids->prompts[0].token_ids, ElementsAre(1, 0, 7));

  ApiOr<CompletionRequest> lists =
      ParseCompletionRequest(R"({"model": "m", "prompt": [[1, 2], [3], [2147483647]]})");
  ASSERT_TRUE(lists.ok()) << lists.error().message;
  ASSERT_EQ(lists->prompts.size(), 3u);
  EXPECT_TRUE(lists->prompts[1].is_tokens);
  EXPECT_THAT(lists->prompts[0].token_ids, ElementsAre(1, 2));
  EXPECT_THAT(lists->prompts[1].token_ids, ElementsAre(3));
  EXPECT_THAT(lists->prompts[2].token_ids, ElementsAre(2147483647));
}

TEST(CompletionRequestTest, StopShapes) {
  ApiOr<CompletionRequest> one =
      ParseCompletionRequest(R"({"model": "m", "prompt": "a", "stop": "###"})");
  ASSERT_TRUE(one.ok());
  EXPECT_THAT(one->sampling.stop, ElementsAre("###"));
  ApiOr<CompletionRequest> empties =
      ParseCompletionRequest(R"({"model": "m", "prompt": "a", "stop": ["", "x", ""]})");
  ASSERT_TRUE(empties.ok());
  EXPECT_THAT(empties->sampling.stop, ElementsAre("x"));  // "" would stop at once: dropped
  ApiOr<CompletionRequest> none =
      ParseCompletionRequest(R"({"model": "m", "prompt": "a", "stop": []})");
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(none->sampling.stop, IsEmpty());
}

TEST(CompletionRequestTest, ExtremesThatAreValid) {
  ApiOr<CompletionRequest> r = ParseCompletionRequest(
      R"({"model": "m", "prompt": "a", "seed": 18446744073709551615, "top_k": -1, "top_p": 1,
          "temperature": 0, "min_p": 1, "frequency_penalty": -2, "presence_penalty": 2,
          "logit_bias": {"0": 100}, "logprobs": 0, "n": 16})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->sampling.seed, 18446744073709551615u);
  EXPECT_EQ(r->sampling.top_k, 0);  // vLLM's -1 is our 0: off
  EXPECT_EQ(r->sampling.temperature, 0.0f);
  EXPECT_EQ(r->sampling.logprobs, true);  // logprobs 0: the sampled token's logprob only
  EXPECT_EQ(r->sampling.top_logprobs, 0);
  EXPECT_EQ(r->n, 16);
}

TEST(ChatRequestTest, EveryField) {
  ApiOr<ChatRequest> r = ParseChatRequest(R"({
      "model": "smol",
      "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "Hi"},
                                                   {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": null},
        {"role": "user", "content": []}],
      "n": 2, "stop": "\n\n", "seed": 1, "max_tokens": 5, "max_completion_tokens": 9,
      "temperature": 1.5, "top_p": 0.5, "top_k": 3, "min_p": 0.1, "presence_penalty": 1,
      "frequency_penalty": 1, "repetition_penalty": 2, "logit_bias": {"5": 1},
      "logprobs": true, "top_logprobs": 20, "prompt_logprobs": 0, "ignore_eos": false,
      "user": "u", "stream": true, "stream_options": {"include_usage": false}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->model, "smol");
  ASSERT_EQ(r->messages.size(), 4u);
  EXPECT_EQ(r->messages[0].role, "system");
  EXPECT_EQ(r->messages[0].content, "Be brief.");
  EXPECT_FALSE(r->messages[0].name.has_value());
  EXPECT_EQ(r->messages[1].name, "ann");
  EXPECT_EQ(r->messages[1].content, "Hi\nthere");  // text parts joined with "\n", as vLLM
  EXPECT_EQ(r->messages[2].role, "assistant");
  EXPECT_EQ(r->messages[2].content, "");
  EXPECT_EQ(r->messages[3].content, "");
  EXPECT_EQ(r->n, 2);
  EXPECT_THAT(r->sampling.stop, ElementsAre("\n\n"));
  EXPECT_EQ(r->sampling.max_tokens, 9);  // max_completion_tokens wins
  EXPECT_EQ(r->sampling.temperature, 1.5f);
  EXPECT_EQ(r->sampling.top_k, 3);
  EXPECT_EQ(r->sampling.repetition_penalty, 2.0f);
  EXPECT_THAT(r->sampling.logit_bias, ElementsAre(Pair(5, 1.0f)));
  EXPECT_EQ(r->sampling.logprobs, true);
  EXPECT_EQ(r->sampling.top_logprobs, 20);
  EXPECT_EQ(r->prompt_logprobs, 0);
  EXPECT_EQ(r->sampling.ignore_eos, false);
  EXPECT_TRUE(r->stream);
  EXPECT_FALSE(r->include_usage);
}

TEST(ChatRequestTest, MaxTokensAloneAndLogprobsOff) {
  ApiOr<ChatRequest> r = ParseChatRequest(
      R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5,
          "logprobs": false})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->sampling.max_tokens, 5);
  EXPECT_EQ(r->sampling.logprobs, false);
  EXPECT_FALSE(r->stream);
}

TEST(RequestTest, UnknownFieldsAreIgnoredAndListed) {
  ApiOr<CompletionRequest> c = ParseCompletionRequest(
      R"({"model": "m", "prompt": "a", "best_of": 2, "suffix": "z", "zeta": {"deep": [1]},
          "messages": []})");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_THAT(c->unknown_fields, ElementsAre("best_of", "messages", "suffix", "zeta"));
  ApiOr<ChatRequest> chat = ParseChatRequest(
      R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [],
          "echo": true, "prompt": "p"})");
  ASSERT_TRUE(chat.ok()) << chat.error().message;
  EXPECT_THAT(chat->unknown_fields, ElementsAre("echo", "prompt", "tools"));
}

struct BadCase {
  const char* body;
  const char* param;    // the error's param ("" for none)
  const char* message;  // a substring of its message
};

void ExpectBad(const ApiError& e, const BadCase& c) {
  EXPECT_EQ(e.http_status, 400) << c.body;
  EXPECT_EQ(e.type, "invalid_request_error") << c.body;
  EXPECT_EQ(e.param, c.param) << c.body << " -> " << e.message;
  EXPECT_THAT(e.message, HasSubstr(c.message)) << c.body;
}

TEST(CompletionRequestTest, BadBodiesNameTheField) {
  const BadCase cases[] = {
      {"", "", "not valid JSON"},
      {"{", "", "not valid JSON"},
      {R"({"model": "m", "prompt": "a",})", "", "not valid JSON"},
      {"[1, 2]", "", "must be a JSON object, got an array"},
      {R"("text")", "", "must be a JSON object, got a string"},
      {R"({"prompt": "a"})", "model", "'model' is required"},
      {R"({"model": null, "prompt": "a"})", "model", "'model' is required"},
      {R"({"model": 3, "prompt": "a"})", "model", "'model' must be a non-empty string, got 3"},
      {R"({"model": "", "prompt": "a"})", "model", "non-empty string"},
      {R"({"model": "m"})", "prompt", "'prompt' is required"},
      {R"({"model": "m", "prompt": 5})", "prompt", "'prompt' must be a string, an array"},
      {R"({"model": "m", "prompt": {"a": 1}})", "prompt", "got an object"},
      {R"({"model": "m", "prompt": []})", "prompt", "must not be empty"},
      {R"({"model": "m", "prompt": [[]]})", "prompt[0]", "'prompt[0]' must not be empty"},
      {R"({"model": "m", "prompt": [1, -2]})", "prompt[1]", "token id"},
      {R"({"model": "m", "prompt": [1, 2.5]})", "prompt[1]", "got 2.5"},
      {R"({"model": "m", "prompt": [1, "a"]})", "prompt[1]", "got a string"},
      {R"({"model": "m", "prompt": [1, 2147483648]})", "prompt[1]", "token id"},
      {R"({"model": "m", "prompt": ["a", 1]})", "prompt[1]", "a string, like prompt[0]"},
      {R"({"model": "m", "prompt": [[1], "a"]})", "prompt[1]", "array of token ids"},
      {R"({"model": "m", "prompt": [[1], [true]]})", "prompt[1][0]", "got true"},
      {R"({"model": "m", "prompt": [null]})", "prompt[0]", "got null"},
      {R"({"model": "m", "prompt": "a", "n": 1.5})", "n",
       "'n' must be an integer in [1, 16], got 1.5"},
      {R"({"model": "m", "prompt": "a", "n": 0})", "n", "[1, 16]"},
      {R"({"model": "m", "prompt": "a", "n": 17})", "n", "got 17"},
      {R"({"model": "m", "prompt": "a", "n": "2"})", "n", "got a string"},
      {R"({"model": "m", "prompt": "a", "temperature": "hot"})", "temperature",
       "'temperature' must be a number >= 0, got a string"},
      {R"({"model": "m", "prompt": "a", "temperature": -0.1})", "temperature", "got -0.1"},
      {R"({"model": "m", "prompt": "a", "temperature": true})", "temperature", "got true"},
      {R"({"model": "m", "prompt": "a", "temperature": 1e999})", "", "not valid JSON"},
      {R"({"model": "m", "prompt": "a", "max_tokens": -1})", "max_tokens",
       "'max_tokens' must be a positive integer, got -1"},
      {R"({"model": "m", "prompt": "a", "max_tokens": 0})", "max_tokens", "positive integer"},
      {R"({"model": "m", "prompt": "a", "max_tokens": 2.0})", "max_tokens", "positive integer"},
      {R"({"model": "m", "prompt": "a", "max_tokens": 2147483648})", "max_tokens", "positive"},
      {R"({"model": "m", "prompt": "a", "max_tokens": 18446744073709551615})", "max_tokens",
       "positive"},
      {R"({"model": "m", "prompt": "a", "seed": -1})", "seed", "non-negative integer"},
      {R"({"model": "m", "prompt": "a", "seed": "7"})", "seed", "non-negative integer"},
      {R"({"model": "m", "prompt": "a", "stop": 3})", "stop", "a string or an array of strings"},
      {R"({"model": "m", "prompt": "a", "stop": ["x", null]})", "stop", "got null"},
      {R"({"model": "m", "prompt": "a", "top_p": 0})", "top_p",
       "'top_p' must be a number in (0, 1]"},
      {R"({"model": "m", "prompt": "a", "top_p": 1.01})", "top_p", "(0, 1]"},
      {R"({"model": "m", "prompt": "a", "top_k": -2})", "top_k", "integer >= 0"},
      {R"({"model": "m", "prompt": "a", "top_k": 0.5})", "top_k", "integer >= 0"},
      {R"({"model": "m", "prompt": "a", "min_p": 1.5})", "min_p", "[0, 1]"},
      {R"({"model": "m", "prompt": "a", "min_p": -0.5})", "min_p", "[0, 1]"},
      {R"({"model": "m", "prompt": "a", "repetition_penalty": 0})", "repetition_penalty", "> 0"},
      {R"({"model": "m", "prompt": "a", "presence_penalty": 2.5})", "presence_penalty", "[-2, 2]"},
      {R"({"model": "m", "prompt": "a", "frequency_penalty": -3})", "frequency_penalty", "[-2, 2]"},
      {R"({"model": "m", "prompt": "a", "frequency_penalty": [0]})", "frequency_penalty",
       "got an array"},
      {R"({"model": "m", "prompt": "a", "logit_bias": [1]})", "logit_bias", "token id"},
      {R"({"model": "m", "prompt": "a", "logit_bias": {"x": 1}})", "logit_bias", "keys"},
      {R"({"model": "m", "prompt": "a", "logit_bias": {"-1": 1}})", "logit_bias", "keys"},
      {R"({"model": "m", "prompt": "a", "logit_bias": {"1": 101}})", "logit_bias", "[-100, 100]"},
      {R"({"model": "m", "prompt": "a", "logit_bias": {"1": "2"}})", "logit_bias", "a string"},
      {R"({"model": "m", "prompt": "a", "logprobs": true})", "logprobs", "[0, 20], got true"},
      {R"({"model": "m", "prompt": "a", "logprobs": 21})", "logprobs", "[0, 20]"},
      {R"({"model": "m", "prompt": "a", "prompt_logprobs": -1})", "prompt_logprobs", "[0, 20]"},
      {R"({"model": "m", "prompt": "a", "echo": 1})", "echo", "true or false"},
      {R"({"model": "m", "prompt": "a", "ignore_eos": "no"})", "ignore_eos", "true or false"},
      {R"({"model": "m", "prompt": "a", "user": 12})", "user", "a string"},
      {R"({"model": "m", "prompt": "a", "stream": "yes"})", "stream", "true or false"},
      {R"({"model": "m", "prompt": "a", "stream_options": {"include_usage": true}})",
       "stream_options", "only allowed when 'stream' is true"},
      {R"({"model": "m", "prompt": "a", "stream": true, "stream_options": true})", "stream_options",
       "an object"},
      {R"({"model": "m", "prompt": "a", "stream": true, "stream_options": {"include_usage": 1}})",
       "stream_options.include_usage", "true or false"},
      {R"({"model": "m", "prompt": "a", "stop_token_ids": [1, -1]})", "stop_token_ids",
       "token ids"},
  };
  for (const BadCase& c : cases) {
    ApiOr<CompletionRequest> r = ParseCompletionRequest(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    ExpectBad(r.error(), c);
  }
}

TEST(ChatRequestTest, BadBodiesNameTheField) {
  const BadCase cases[] = {
      {R"({"messages": [{"role": "user", "content": "x"}]})", "model", "'model' is required"},
      {R"({"model": "m"})", "messages", "'messages' is required"},
      {R"({"model": "m", "messages": "hi"})", "messages", "an array of messages, got a string"},
      {R"({"model": "m", "messages": []})", "messages", "at least one message"},
      {R"({"model": "m", "messages": ["hi"]})", "messages[0]", "an object with 'role'"},
      {R"({"model": "m", "messages": [{"content": "x"}]})", "messages[0].role", "is required"},
      {R"({"model": "m", "messages": [{"role": 1, "content": "x"}]})", "messages[0].role",
       "non-empty string"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user"}]})",
       "messages[1].content", "'messages[1].content' is required"},
      {R"({"model": "m", "messages": [{"role": "user", "content": null}]})", "messages[0].content",
       "is required"},
      {R"({"model": "m", "messages": [{"role": "user", "content": 5}]})", "messages[0].content",
       "a string or an array of content parts"},
      {R"({"model": "m", "messages": [{"role": "user", "content": ["x"]}]})",
       "messages[0].content[0]", "an object with 'type' and 'text'"},
      {R"({"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]})",
       "messages[0].content[0].type", "is required"},
      {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url",
          "image_url": {"url": "http://x"}}]}]})",
       "messages[0].content[0].type", "Only text content parts are supported"},
      {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]})",
       "messages[0].content[0].text", "is required"},
      {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "text",
          "text": 3}]}]})",
       "messages[0].content[0].text", "a string, got 3"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x", "name": 5}]})",
       "messages[0].name", "a string"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": 2})",
       "logprobs", "true or false"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",
       "top_logprobs", "needs 'logprobs'"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true,
          "top_logprobs": 21})",
       "top_logprobs", "[0, 20]"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
          "max_completion_tokens": 0})",
       "max_completion_tokens", "positive integer"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"})",
       "temperature", "number >= 0"},
  };
  for (const BadCase& c : cases) {
    ApiOr<ChatRequest> r = ParseChatRequest(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    ExpectBad(r.error(), c);
  }
}

TEST(RequestTest, LimitsComeFromTheConfig) {
  const RequestLimits limits{.max_n = 4, .max_logprobs = 5};
  ApiOr<CompletionRequest> r =
      ParseCompletionRequest(R"({"model": "m", "prompt": "a", "n": 5})", limits);
  ASSERT_FALSE(r.ok());
  ExpectBad(r.error(), {"", "n", "'n' must be an integer in [1, 4], got 5"});
  EXPECT_TRUE(ParseCompletionRequest(R"({"model": "m", "prompt": "a", "n": 4})", limits).ok());
  r = ParseCompletionRequest(R"({"model": "m", "prompt": "a", "logprobs": 6})", limits);
  ASSERT_FALSE(r.ok());
  ExpectBad(r.error(), {"", "logprobs", "[0, 5]"});
  ApiOr<ChatRequest> c = ParseChatRequest(
      R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true,
          "top_logprobs": 6})",
      limits);
  ASSERT_FALSE(c.ok());
  ExpectBad(c.error(), {"", "top_logprobs", "[0, 5]"});
}

TEST(RequestTest, InvalidUtf8IsA400WithItsOffset) {
  // A raw 0xFF inside the prompt string, at byte offset 28 of the body.
  const std::string body = std::string(R"({"model": "m", "prompt": "ab)") + "\xff" + R"("})";
  ApiOr<CompletionRequest> r = ParseCompletionRequest(body);
  ASSERT_FALSE(r.ok());
  ExpectBad(r.error(), {"", "", "not valid UTF-8"});
  EXPECT_THAT(r.error().message, HasSubstr("offset 28"));
  const char*
      bodies
          [] =
              {
                  "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": "
                  "\"\xc0\xaf\"}]}",  // overlong
                  "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": "
                  "\"\xed\xa0\x80\"}]}",  // surrogate
                  "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": "
                  "\"\xe2\x82\"}]}",  // truncated
                  "{\"model\": \"m\xf8\", \"messages\": [{\"role\": \"user\", \"content\": "
                  "\"x\"}]}",
              };
  for (const char* b : bodies) {
    ApiOr<ChatRequest> c = ParseChatRequest(b);
    ASSERT_FALSE(c.ok()) << b;
    ExpectBad(c.error(), {b, "", "not valid UTF-8"});
  }
  // A lone surrogate written as a JSON escape is no character either.
  ApiOr<ChatRequest> escaped =
      ParseChatRequest(R"({"model": "m", "messages": [{"role": "user", "content": "\ud800x"}]})");
  ASSERT_FALSE(escaped.ok());
  ExpectBad(escaped.error(), {"", "", "surrogate"});
  // Valid multi-byte text and escapes pass.
  ApiOr<ChatRequest> fine = ParseChatRequest(
      R"({"model": "m", "messages": [{"role": "user", "content": "héllo 🙂 \ud83d\ude42"}]})");
  ASSERT_TRUE(fine.ok()) << fine.error().message;
  EXPECT_EQ(fine->messages[0].content, "h\xc3\xa9llo \xf0\x9f\x99\x82 \xf0\x9f\x99\x82");
}

TEST(RequestTest, DeepNestingIsRefusedWithoutRecursion) {
  for (const int depth : {65, 100000}) {
    const std::string body = R"({"model": "m", "prompt": "a", "x": )" + std::string(depth, '[') +
                             std::string(depth, ']') + "}";
    ApiOr<CompletionRequest> r = ParseCompletionRequest(body);
    ASSERT_FALSE(r.ok()) << depth;
    ExpectBad(r.error(), {"", "", "deeper than 64 levels"});
  }
  // 64 levels (the object itself is the first) pass; the nested field is merely unknown.
  const std::string ok_body =
      R"({"model": "m", "prompt": "a", "x": )" + std::string(63, '[') + std::string(63, ']') + "}";
  ApiOr<CompletionRequest> ok = ParseCompletionRequest(ok_body);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_THAT(ok->unknown_fields, ElementsAre("x"));
  // Brackets inside strings (escaped quotes included) are text, not nesting.
  const std::string text = "\\\"" + std::string(1000, '[');
  ApiOr<CompletionRequest> in_string =
      ParseCompletionRequest(R"({"model": "m", "prompt": ")" + text + R"("})");
  ASSERT_TRUE(in_string.ok()) << in_string.error().message;
  EXPECT_EQ(in_string->prompts[0].text, "\"" + std::string(1000, '['));
  // Unbalanced garbage is malformed JSON, not a crash.
  ApiOr<CompletionRequest> garbage = ParseCompletionRequest(std::string(50, ']') + "{{");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().http_status, 400);
}

TEST(RequestTest, HugeBodiesParse) {
  const std::string prompt(8 << 20, 'x');
  ApiOr<CompletionRequest> r =
      ParseCompletionRequest(R"({"model": "m", "prompt": ")" + prompt + R"("})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->prompts[0].text.size(), prompt.size());

  std::string ids = "[0";
  for (int i = 1; i < 1000000; ++i) ids += "," + std::to_string(i % 50000);
  ids += "]";
  r = ParseCompletionRequest(R"({"model": "m", "prompt": )" + ids + "}");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->prompts[0].token_ids.size(), 1000000u);
  EXPECT_EQ(r->prompts[0].token_ids[999999], 999999 % 50000);
}

TEST(ErrorBodyTest, OpenAiShape) {
  const nlohmann::json j = nlohmann::json::parse(ErrorBody(ApiError{
      .http_status = 400, .type = "invalid_request_error", .message = "bad \xff n", .param = "n"}));
  ASSERT_TRUE(j.contains("error"));
  EXPECT_EQ(j["error"]["message"], "bad \xEF\xBF\xBD n");  // invalid UTF-8 replaced, not thrown
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "n");
  EXPECT_EQ(j["error"]["code"], 400);
  const nlohmann::json none = nlohmann::json::parse(
      ErrorBody(ApiError{.http_status = 404, .type = "not_found_error", .message = "no model"}));
  EXPECT_TRUE(none["error"]["param"].is_null());
  EXPECT_EQ(none["error"]["code"], 404);
  EXPECT_EQ(none["error"]["type"], "not_found_error");
}

TEST(CheckContextLengthTest, RoomLeftAndBothErrors) {
  ApiOr<int32_t> fits = CheckContextLength(6, 4, 10, "prompt");
  ASSERT_TRUE(fits.ok());
  EXPECT_EQ(*fits, 4);
  ApiOr<int32_t> rest = CheckContextLength(6, std::nullopt, 10, "prompt");
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(*rest, 4);  // the room that is left

  ApiOr<int32_t> too_many = CheckContextLength(6, 5, 10, "messages");
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.error().http_status, 400);
  EXPECT_EQ(too_many.error().param, "max_tokens");
  EXPECT_THAT(too_many.error().message, HasSubstr("'max_tokens' is too large: 5"));
  EXPECT_THAT(too_many.error().message, HasSubstr("maximum context length is 10 tokens"));
  EXPECT_THAT(too_many.error().message, HasSubstr("6 input tokens"));

  for (const int64_t prompt : {int64_t{10}, int64_t{11}, int64_t{1} << 40}) {
    ApiOr<int32_t> long_prompt = CheckContextLength(prompt, std::nullopt, 10, "messages");
    ASSERT_FALSE(long_prompt.ok()) << prompt;
    EXPECT_EQ(long_prompt.error().type, "invalid_request_error");
    EXPECT_EQ(long_prompt.error().param, "messages");
    EXPECT_THAT(long_prompt.error().message,
                HasSubstr("has " + std::to_string(prompt) + " input tokens"));
    EXPECT_THAT(long_prompt.error().message, HasSubstr("length of the messages"));
  }
  EXPECT_EQ(CheckContextLength(10, 1, 10, "prompt").error().param, "prompt");
}

TEST(ToSamplingParamsTest, SetFieldsReplaceDefaults) {
  SamplingParams defaults;
  defaults.temperature = 0.3f;
  defaults.top_k = 7;
  defaults.seed = 99;
  ApiOr<CompletionRequest> r = ParseCompletionRequest(
      R"({"model": "m", "prompt": "a", "temperature": 0.9, "top_p": 0.5, "min_p": 0.2,
          "repetition_penalty": 1.3, "frequency_penalty": 0.25, "presence_penalty": -0.25,
          "logit_bias": {"3": -1}, "logprobs": 2})");
  ASSERT_TRUE(r.ok());
  const SamplingParams p = ToSamplingParams(r->sampling, defaults);
  EXPECT_EQ(p.temperature, 0.9f);
  EXPECT_EQ(p.top_k, 7);  // unset: the default
  EXPECT_EQ(p.seed, 99u);
  EXPECT_EQ(p.top_p, 0.5f);
  EXPECT_EQ(p.min_p, 0.2f);
  EXPECT_EQ(p.repetition_penalty, 1.3f);
  EXPECT_EQ(p.frequency_penalty, 0.25f);
  EXPECT_EQ(p.presence_penalty, -0.25f);
  EXPECT_THAT(p.logit_bias, ElementsAre(Pair(3, -1.0f)));
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 2);
  EXPECT_TRUE(ValidateSamplingParams(p).ok());
  const SamplingParams untouched = ToSamplingParams(SamplingFields{}, defaults);
  EXPECT_EQ(untouched.temperature, 0.3f);
  EXPECT_FALSE(untouched.logprobs);
}

}  // namespace
}  // namespace kvfold::api
