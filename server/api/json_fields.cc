#include "server/api/json_fields.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace kvfold::api {
namespace {

absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// What a value was, for an error message; never echoes strings or containers (they may be huge
// or private).
std::string Describe(const Json& v) {
  if (v.is_number() || v.is_boolean() || v.is_null()) return v.dump();
  return absl::StrCat(v.is_array() || v.is_object() ? "an " : "a ", v.type_name());
}

}  // namespace

const Json* FindField(const Json& object, std::string_view name) {
  auto it = object.find(name);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

ApiError FieldError(std::string_view param, std::string_view want, const Json& got) {
  return InvalidRequest(
      absl::StrCat("'", View(param), "' must be ", View(want), ", got ", Describe(got)),
      std::string(param));
}

bool AsInt64(const Json& value, int64_t min, int64_t max, int64_t* out) {
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(v);
  } else if (value.is_number_integer()) {
    *out = value.get<int64_t>();
  } else {
    return false;
  }
  return *out >= min && *out <= max;
}

MaybeError ReadInt32(const Json& object, std::string_view name, int64_t min, int64_t max,
                     std::string_view want, std::optional<int32_t>& out) {
  const Json* v = FindField(object, name);
  if (v == nullptr) return std::nullopt;
  int64_t n = 0;
  if (!AsInt64(*v, std::max<int64_t>(min, std::numeric_limits<int32_t>::min()),
               std::min<int64_t>(max, std::numeric_limits<int32_t>::max()), &n)) {
    return FieldError(name, want, *v);
  }
  out = static_cast<int32_t>(n);
  return std::nullopt;
}

MaybeError ReadFloat(const Json& object, std::string_view name,
                     const std::function<bool(double)>& in_range, std::string_view want,
                     std::optional<float>& out) {
  const Json* v = FindField(object, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number() || !std::isfinite(v->get<double>()) || !in_range(v->get<double>())) {
    return FieldError(name, want, *v);
  }
  out = static_cast<float>(v->get<double>());
  return std::nullopt;
}

MaybeError ReadBool(const Json& object, std::string_view name, std::optional<bool>& out) {
  const Json* v = FindField(object, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return FieldError(name, "true or false", *v);
  out = v->get<bool>();
  return std::nullopt;
}

MaybeError ReadString(const Json& object, std::string_view name, std::optional<std::string>& out) {
  const Json* v = FindField(object, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return FieldError(name, "a string", *v);
  out = v->get<std::string>();
  return std::nullopt;
}

}  // namespace kvfold::api
