// jinja2's built-in filters and tests, Python's str and dict methods, attribute and item
// lookup, and the globals Hugging Face adds (raise_exception, strftime_now).
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/chat/value.h"

namespace kvfold::chat {

// `object.name` as jinja2 resolves it: a dict entry, a namespace attribute, or a str/dict method;
// Undefined when none.
Value GetAttribute(const Value& object, const std::string& name);
// `object[key]`: a dict entry, a list or string element (negative counts from the end), else the
// attribute; Undefined when none.
Value GetItem(const Value& object, const Value& key);
absl::StatusOr<Value> Slice(const Value& object, std::optional<int64_t> start,
                            std::optional<int64_t> stop, std::optional<int64_t> step);

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& value,
                                  const CallArgs& args);
absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& value, const CallArgs& args);

// The global functions: raise_exception, namespace, range, dict, strftime_now.
ValueDict Globals();

}  // namespace kvfold::chat
