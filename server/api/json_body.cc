#include "server/api/json_body.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::api {

int32_t JsonNestingDepth(std::string_view text, int32_t limit) {
  int32_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // skip the escaped character
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

ApiOr<Json> ParseJsonObject(std::string_view body, int32_t max_depth) {
  if (std::optional<size_t> bad = FirstInvalidUtf8Offset(body)) {
    return InvalidRequest(
        absl::StrCat("The request body is not valid UTF-8 (first bad byte at offset ", *bad, ")"));
  }
  if (JsonNestingDepth(body, max_depth) > max_depth) {
    return InvalidRequest(
        absl::StrCat("The request body nests arrays/objects deeper than ", max_depth, " levels"));
  }
  Json j;
  try {
    j = Json::parse(body);
  } catch (const Json::exception& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 2: ...".
    std::string_view what = e.what();
    if (size_t bracket = what.find("] "); what.starts_with("[json.") && bracket != what.npos) {
      what.remove_prefix(bracket + 2);
    }
    return InvalidRequest(absl::StrCat("The request body is not valid JSON: ",
                                       absl::string_view(what.data(), what.size())));
  }
  if (!j.is_object()) {
    return InvalidRequest(absl::StrCat("The request body must be a JSON object, got ",
                                       j.is_array() || j.is_object() ? "an " : "a ",
                                       j.type_name()));
  }
  return j;
}

}  // namespace kvfold::api
