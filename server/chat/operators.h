// Python's operators on template values: arithmetic, comparison, membership, iteration.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/chat/value.h"

namespace kvfold::chat {

// `op` is one of + - * / // % ** ~ == != < > <= >= in, "not in".
absl::StatusOr<Value> BinaryOp(const std::string& op, const Value& a, const Value& b);
absl::StatusOr<Value> UnaryOp(const std::string& op, const Value& a);
// Python `needle in haystack`.
absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle);
// What `for x in value` visits: list items, dict keys, string characters; Undefined is empty.
absl::StatusOr<ValueList> Iterate(const Value& value);

}  // namespace kvfold::chat
