#include "server/tokenizer/json_util.h"

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::tokenizer_impl {

absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view source) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: not valid JSON: %s", source, e.what()));
  }
}

const Json* FindMember(const Json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> GetString(const Json& object, std::string_view key,
                                      std::string_view where) {
  const Json* member = FindMember(object, key);
  if (member == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: missing \"%s\"", where, key));
  }
  if (!member->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: \"%s\" must be a string, not %s", where, key, member->type_name()));
  }
  return member->get_ref<const std::string&>();
}

absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& object,
                                                             std::string_view key,
                                                             std::string_view where) {
  if (FindMember(object, key) == nullptr) return std::optional<std::string>();
  absl::StatusOr<std::string> value = GetString(object, key, where);
  if (!value.ok()) return value.status();
  return std::optional<std::string>(*std::move(value));
}

absl::StatusOr<std::string> GetSingleCharacter(const Json& object, std::string_view key,
                                               std::string_view where) {
  absl::StatusOr<std::string> value = GetString(object, key, where);
  if (!value.ok()) return value.status();
  if (!IsSingleCharacter(*value)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s must be one character", where, key));
  }
  return value;
}

absl::StatusOr<bool> GetBool(const Json& object, std::string_view key, bool default_value,
                             std::string_view where) {
  const Json* member = FindMember(object, key);
  if (member == nullptr) return default_value;
  if (!member->is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: \"%s\" must be a boolean, not %s", where, key, member->type_name()));
  }
  return member->get<bool>();
}

absl::StatusOr<int64_t> AsInt(const Json& value, int64_t min_value, int64_t max_value,
                              std::string_view where) {
  int64_t result = 0;
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(max_value)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %d is out of range [%d, %d]", where, u, min_value, max_value));
    }
    result = static_cast<int64_t>(u);
  } else if (value.is_number_integer()) {
    result = value.get<int64_t>();
  } else {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: expected an integer, not %s", where, value.type_name()));
  }
  if (result < min_value || result > max_value) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d is out of range [%d, %d]", where, result, min_value, max_value));
  }
  return result;
}

absl::StatusOr<int64_t> GetInt(const Json& object, std::string_view key,
                               std::optional<int64_t> default_value, int64_t min_value,
                               int64_t max_value, std::string_view where) {
  const Json* member = FindMember(object, key);
  if (member == nullptr) {
    if (default_value.has_value()) return *default_value;
    return absl::InvalidArgumentError(absl::StrFormat("%s: missing \"%s\"", where, key));
  }
  return AsInt(*member, min_value, max_value, absl::StrFormat("%s \"%s\"", where, key));
}

absl::StatusOr<std::string> ComponentType(const Json& component, std::string_view where) {
  if (!component.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s must be an object, not %s", where, component.type_name()));
  }
  return GetString(component, "type", where);
}

}  // namespace kvfold::tokenizer_impl
