// The HTTP front end's pure parts: routing (404 / 405), who needs the API key, Bearer parsing,
// and the bytes of plain and chunked responses.
#include "server/http/http_routes.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/api/api_error.h"

namespace kvfold::http {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(FindRouteTest, KnownPathsAndMethods) {
  EXPECT_EQ(*FindRoute("POST", "/v1/completions"), Route::kCompletions);
  EXPECT_EQ(*FindRoute("POST", "/v1/chat/completions"), Route::kChatCompletions);
  EXPECT_EQ(*FindRoute("GET", "/v1/models"), Route::kModels);
  EXPECT_EQ(*FindRoute("POST", "/tokenize"), Route::kTokenize);
  EXPECT_EQ(*FindRoute("POST", "/detokenize"), Route::kDetokenize);
  EXPECT_EQ(*FindRoute("GET", "/health"), Route::kHealth);
  EXPECT_EQ(*FindRoute("GET", "/ready"), Route::kReady);
  // A query string and a trailing slash do not change the route.
  EXPECT_EQ(*FindRoute("GET", "/health?probe=1"), Route::kHealth);
  EXPECT_EQ(*FindRoute("GET", "/v1/models/"), Route::kModels);
}

TEST(FindRouteTest, UnknownPathIs404AndWrongMethodIs405) {
  api::ApiOr<Route> missing = FindRoute("GET", "/v2/completions");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().http_status, 404);
  EXPECT_THAT(missing.error().message, HasSubstr("/v2/completions"));
  api::ApiOr<Route> wrong = FindRoute("GET", "/v1/chat/completions");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().http_status, 405);
  EXPECT_THAT(wrong.error().message, HasSubstr("POST"));
  EXPECT_EQ(FindRoute("DELETE", "/health").error().http_status, 405);
  // Paths match exactly, not by prefix.
  EXPECT_EQ(FindRoute("POST", "/v1/completionsX").error().http_status, 404);
}

TEST(ApiKeyTest, OnlyV1NeedsTheKey) {
  EXPECT_TRUE(NeedsApiKey(Route::kCompletions));
  EXPECT_TRUE(NeedsApiKey(Route::kChatCompletions));
  EXPECT_TRUE(NeedsApiKey(Route::kModels));
  EXPECT_FALSE(NeedsApiKey(Route::kHealth));
  EXPECT_FALSE(NeedsApiKey(Route::kReady));
}

TEST(ApiKeyTest, BearerMatching) {
  EXPECT_TRUE(BearerMatches("Bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerMatches("bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerMatches("  Bearer   s3cret  ", "s3cret"));
  EXPECT_FALSE(BearerMatches("Bearer s3cre", "s3cret"));
  EXPECT_FALSE(BearerMatches("Bearer s3cretX", "s3cret"));
  EXPECT_FALSE(BearerMatches("Bearer S3CRET", "s3cret"));
  EXPECT_FALSE(BearerMatches("Basic s3cret", "s3cret"));
  EXPECT_FALSE(BearerMatches("s3cret", "s3cret"));
  EXPECT_FALSE(BearerMatches("", "s3cret"));
  EXPECT_FALSE(BearerMatches("Bearer ", ""));  // an empty key never matches
  EXPECT_EQ(Unauthorized().http_status, 401);
}

TEST(ResponseBytesTest, PlainResponse) {
  const std::string body = R"({"ok":true})";
  const std::string r = FormatResponse(429, "application/json", body, true, {{"Retry-After", "1"}});
  EXPECT_THAT(r, StartsWith("HTTP/1.1 429 Too Many Requests\r\n"));
  EXPECT_THAT(r, HasSubstr("\r\nContent-Length: " + std::to_string(body.size()) + "\r\n"));
  EXPECT_THAT(r, HasSubstr("\r\nRetry-After: 1\r\n"));
  EXPECT_THAT(r, ::testing::Not(HasSubstr("Connection: close")));
  EXPECT_EQ(r.substr(r.find("\r\n\r\n") + 4), body);
  EXPECT_THAT(FormatResponse(413, "application/json", "", false),
              HasSubstr("\r\nConnection: close\r\n"));
}

TEST(ResponseBytesTest, ChunkedStream) {
  EXPECT_THAT(StreamHead(true), HasSubstr("Transfer-Encoding: chunked\r\n"));
  EXPECT_THAT(StreamHead(true), HasSubstr("Content-Type: text/event-stream"));
  EXPECT_TRUE(StreamHead(true).ends_with("\r\n\r\n"));
  // RFC 9112 chunk framing: size in hex, CRLF, data, CRLF; the empty last chunk ends the body.
  const std::string data(26, 'x');
  EXPECT_EQ(Chunk(data), "1a\r\n" + data + "\r\n");
  EXPECT_EQ(Chunk(""), "");
  EXPECT_EQ(LastChunk(), "0\r\n\r\n");
}

}  // namespace
}  // namespace kvfold::http
