// vLLM's `/tokenize` and `/detokenize` bodies: {"prompt"} or {"messages"} to {"count",
// "max_model_len", "tokens"}, and {"tokens"} to {"prompt"}.
#pragma once

#include <string>
#include <string_view>

#include "server/api/api_error.h"
#include "server/serving/served_model.h"

namespace kvfold::http {

// {"prompt": text, "add_special_tokens": true by default} or {"messages": [...] rendered by the
// chat template, "add_generation_prompt": true, "add_special_tokens": false by default}; an
// optional "model" must name the served model.
api::ApiOr<std::string> TokenizeResponse(std::string_view body, const serving::ServedModel& model);

// {"tokens": [ids]} (special tokens kept, as vLLM) -> {"prompt": text}.
api::ApiOr<std::string> DetokenizeResponse(std::string_view body,
                                           const serving::ServedModel& model);

}  // namespace kvfold::http
