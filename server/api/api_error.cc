#include "server/api/api_error.h"

#include "nlohmann/json.hpp"

namespace kvfold::api {

ApiError InvalidRequest(std::string message, std::string param) {
  return ApiError{.http_status = 400,
                  .type = "invalid_request_error",
                  .message = std::move(message),
                  .param = std::move(param)};
}

std::string ErrorBody(const ApiError& error) {
  nlohmann::ordered_json body;
  body["message"] = error.message;
  body["type"] = error.type;
  body["param"] =
      error.param.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(error.param);
  body["code"] = error.http_status;
  // Messages may quote client bytes; never throw on invalid UTF-8 there.
  return nlohmann::ordered_json{{"error", body}}.dump(
      -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace kvfold::api
