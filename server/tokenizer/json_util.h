// Reading tokenizer.json without exceptions: parse errors and type mismatches become
// absl::Status (nlohmann::json throws on both).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvfold::tokenizer_impl {

using Json = nlohmann::json;

// `source` names the text in errors (a path, or "<memory>").
absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view source);

// The member `key` of `object`, or nullptr when `object` is not an object, lacks `key`, or the
// member is null.
const Json* FindMember(const Json& object, std::string_view key);

// Required string member; `where` names the object in errors ("normalizer Replace").
absl::StatusOr<std::string> GetString(const Json& object, std::string_view key,
                                      std::string_view where);
// Optional string member: nullopt when absent or null.
absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& object,
                                                             std::string_view key,
                                                             std::string_view where);
// Boolean member, `default_value` when absent or null.
absl::StatusOr<bool> GetBool(const Json& object, std::string_view key, bool default_value,
                             std::string_view where);
// Integer member in [min_value, max_value], `default_value` when absent or null.
absl::StatusOr<int64_t> GetInt(const Json& object, std::string_view key,
                               std::optional<int64_t> default_value, int64_t min_value,
                               int64_t max_value, std::string_view where);

// A JSON value as an integer in [min_value, max_value].
absl::StatusOr<int64_t> AsInt(const Json& value, int64_t min_value, int64_t max_value,
                              std::string_view where);

// The "type" member of a pipeline component, e.g. "Metaspace".
absl::StatusOr<std::string> ComponentType(const Json& component, std::string_view where);

}  // namespace kvfold::tokenizer_impl
