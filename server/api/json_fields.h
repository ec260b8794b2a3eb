// Typed reads of one field of a JSON request object. Each returns the error that names the field
// (its `param`) and says what was expected and what came instead; absent and null fields leave
// the output untouched.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "server/api/api_error.h"

namespace kvfold::api {

using Json = nlohmann::json;
using MaybeError = std::optional<ApiError>;

// The field's value, or nullptr when it is absent or null.
const Json* FindField(const Json& object, std::string_view name);

// "'param' must be WANT, got 1.5" (scalars are quoted; strings, arrays and objects are named).
ApiError FieldError(std::string_view param, std::string_view want, const Json& got);

// An integer (not 1.5, not "3", not true) within [min, max].
bool AsInt64(const Json& value, int64_t min, int64_t max, int64_t* out);

MaybeError ReadInt32(const Json& object, std::string_view name, int64_t min, int64_t max,
                     std::string_view want, std::optional<int32_t>& out);
// A finite number accepted by `in_range`.
MaybeError ReadFloat(const Json& object, std::string_view name,
                     const std::function<bool(double)>& in_range, std::string_view want,
                     std::optional<float>& out);
MaybeError ReadBool(const Json& object, std::string_view name, std::optional<bool>& out);
MaybeError ReadString(const Json& object, std::string_view name, std::optional<std::string>& out);

}  // namespace kvfold::api
