// The HTTP front end's pure decisions, kept apart from the sockets so they are unit-tested:
// which handler a method and path reach (404 / 405 otherwise), who must authenticate, and the
// bytes of plain and chunked (SSE) responses.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/api/api_error.h"

namespace kvfold::http {

enum class Route {
  kCompletions,      // POST /v1/completions
  kChatCompletions,  // POST /v1/chat/completions
  kModels,           // GET /v1/models
  kTokenize,         // POST /tokenize
  kDetokenize,       // POST /detokenize
  kHealth,           // GET /health: the process is up
  kReady,            // GET /ready: the engine takes work (and the KV pool's block counts)
  kMetrics,          // GET /metrics: Prometheus text exposition (docs/metrics.md)
};

// The route for `method` and `target` (a query string is ignored), or the 404 for an unknown path
// and the 405 for a known path with another method.
api::ApiOr<Route> FindRoute(std::string_view method, std::string_view target);

// /v1/* needs the API key when one is set; /health, /ready, /metrics, /tokenize and /detokenize
// stay open
// (as vLLM's --api-key).
bool NeedsApiKey(Route route);

// Whether an `Authorization` header value carries `Bearer <api_key>` (scheme case-insensitive,
// key compared in constant time).
bool BearerMatches(std::string_view authorization, std::string_view api_key);

// The 401 body for a missing or wrong key.
api::ApiError Unauthorized();

using Headers = std::vector<std::pair<std::string, std::string>>;

// A complete HTTP/1.1 response with Content-Length.
std::string FormatResponse(int status, std::string_view content_type, std::string_view body,
                           bool keep_alive, const Headers& extra = {});
// The head of a streamed (chunked) text/event-stream response; the body follows as Chunk()s and
// ends with LastChunk().
std::string StreamHead(bool keep_alive);
std::string Chunk(std::string_view data);  // empty data: empty string (an empty chunk would end it)
std::string LastChunk();

std::string_view ReasonPhrase(int status);

}  // namespace kvfold::http
