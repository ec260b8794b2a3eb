// Reading tokenizer.json without exceptions: parse errors and type mismatches become
// absl::Status (nlohmann::json throws on both).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
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
// Required string member that must be exactly one UTF-8 character (a Metaspace replacement, a
// Strip content).
absl::StatusOr<std::string> GetSingleCharacter(const Json& object, std::string_view key,
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

// A pipeline stage's "Sequence" component: each item of the array member `key`, in order, built by
// the stage's factory `make`, the steps wrapped in `SequenceT`. `stage` names the stage in errors
// ("normalizer").
template <typename SequenceT, typename Stage>
absl::StatusOr<std::unique_ptr<Stage>> MakeSequenceOf(
    const Json& config, std::string_view stage, std::string_view key,
    absl::StatusOr<std::unique_ptr<Stage>> (*make)(const Json&)) {
  const Json* list = FindMember(config, key);
  if (list == nullptr || !list->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s Sequence: \"%s\" must be an array", stage, key));
  }
  std::vector<std::unique_ptr<Stage>> steps;
  for (const Json& item : *list) {
    absl::StatusOr<std::unique_ptr<Stage>> step = make(item);
    if (!step.ok()) return step.status();
    steps.push_back(*std::move(step));
  }
  return std::make_unique<SequenceT>(std::move(steps));
}

}  // namespace kvfold::tokenizer_impl
