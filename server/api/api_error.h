// OpenAI-style errors for the HTTP front end: what went wrong, the HTTP status it maps to, and
// the JSON body clients (the `openai` Python package among them) know how to read.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kvfold::api {

struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";  // or "not_found_error", "server_error", ...
  std::string message;
  std::string param;  // the offending field ("messages[0].content"); empty: none
};

// A 400 invalid_request_error.
ApiError InvalidRequest(std::string message, std::string param = "");

// {"error": {"message", "type", "param" (null when empty), "code" (the HTTP status)}}.
std::string ErrorBody(const ApiError& error);

// A value or the ApiError that prevented it (absl::StatusOr cannot carry a status and a param).
template <typename T>
class ApiOr {
 public:
  ApiOr(T value) : v_(std::move(value)) {}         // NOLINT: implicit, like StatusOr
  ApiOr(ApiError error) : v_(std::move(error)) {}  // NOLINT
  bool ok() const { return std::holds_alternative<T>(v_); }
  const ApiError& error() const { return std::get<ApiError>(v_); }
  T& value() { return std::get<T>(v_); }
  const T& value() const { return std::get<T>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, ApiError> v_;
};

}  // namespace kvfold::api
