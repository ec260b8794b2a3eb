#include "server/http/http_routes.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvfold::http {
namespace {

struct RouteEntry {
  std::string_view path;
  std::string_view method;
  Route route;
};

constexpr RouteEntry kRoutes[] = {
    {"/v1/completions", "POST", Route::kCompletions},
    {"/v1/chat/completions", "POST", Route::kChatCompletions},
    {"/v1/models", "GET", Route::kModels},
    {"/tokenize", "POST", Route::kTokenize},
    {"/detokenize", "POST", Route::kDetokenize},
    {"/health", "GET", Route::kHealth},
    {"/ready", "GET", Route::kReady},
    {"/metrics", "GET", Route::kMetrics},
};

}  // namespace

api::ApiOr<Route> FindRoute(std::string_view method, std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  for (const RouteEntry& e : kRoutes) {
    if (e.path != path) continue;
    if (method == e.method) return e.route;
    return api::ApiError{
        .http_status = 405,
        .type = "invalid_request_error",
        .message = absl::StrCat("Method ", std::string(method), " is not allowed for ",
                                std::string(path), "; use ", std::string(e.method))};
  }
  return api::ApiError{.http_status = 404,
                       .type = "not_found_error",
                       .message = absl::StrCat("Not found: ", std::string(path))};
}

bool NeedsApiKey(Route route) {
  return route == Route::kCompletions || route == Route::kChatCompletions ||
         route == Route::kModels;
}

bool BearerMatches(std::string_view authorization, std::string_view api_key) {
  absl::string_view value =
      absl::StripAsciiWhitespace(absl::string_view(authorization.data(), authorization.size()));
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  absl::string_view key = absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size()));
  if (api_key.empty() || key.size() != api_key.size()) return false;
  // Constant time in the key's contents: a timing probe learns its length at most.
  unsigned char diff = 0;
  for (size_t i = 0; i < key.size(); ++i) diff |= static_cast<unsigned char>(key[i] ^ api_key[i]);
  return diff == 0;
}

api::ApiError Unauthorized() {
  return api::ApiError{.http_status = 401,
                       .type = "invalid_request_error",
                       .message = "Missing or invalid API key: send 'Authorization: Bearer <key>'"};
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

std::string FormatResponse(int status, std::string_view content_type, std::string_view body,
                           bool keep_alive, const Headers& extra) {
  std::string out = absl::StrCat("HTTP/1.1 ", status, " ", std::string(ReasonPhrase(status)),
                                 "\r\nServer: kvfold\r\nContent-Type: ", std::string(content_type),
                                 "\r\nContent-Length: ", body.size(), "\r\n");
  if (!keep_alive) absl::StrAppend(&out, "Connection: close\r\n");
  for (const auto& [name, value] : extra) absl::StrAppend(&out, name, ": ", value, "\r\n");
  absl::StrAppend(&out, "\r\n", std::string(body));
  return out;
}

std::string StreamHead(bool keep_alive) {
  return absl::StrCat(
      "HTTP/1.1 200 OK\r\nServer: kvfold\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
      "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n",
      keep_alive ? "" : "Connection: close\r\n", "\r\n");
}

std::string Chunk(std::string_view data) {
  if (data.empty()) return "";
  return absl::StrCat(absl::StrFormat("%x", data.size()), "\r\n", std::string(data), "\r\n");
}

std::string LastChunk() { return "0\r\n\r\n"; }

}  // namespace kvfold::http
