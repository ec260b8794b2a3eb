// A request body to a JSON object, or a 400 that says why not: invalid UTF-8 (with its byte
// offset), nesting deeper than any real request needs (checked before parsing, so hostile input
// never reaches a recursive walk), malformed JSON (with the parser's position), or a non-object.
#pragma once

#include <cstdint>
#include <string_view>

#include "server/api/api_error.h"
#include "server/api/json_fields.h"

namespace kvfold::api {

inline constexpr int32_t kDefaultMaxJsonDepth = 64;

// Deepest nesting of arrays and objects in `text`, ignoring brackets inside strings. Stops counting
// (and returns) as soon as it passes `limit`.
int32_t JsonNestingDepth(std::string_view text, int32_t limit);

ApiOr<Json> ParseJsonObject(std::string_view body, int32_t max_depth = kDefaultMaxJsonDepth);

}  // namespace kvfold::api
