// What `kvfold serve` hands each front end (HTTP and gRPC): the one model it serves and the
// server-wide policies both front ends apply the same way.
#pragma once

#include <cstdint>
#include <string>

#include "server/metrics/serving_metrics.h"
#include "server/serving/chat_prompt.h"
#include "server/serving/serving_engine.h"
#include "server/tokenizer/tokenizer.h"

namespace kvfold::serving {

struct ServedModel {
  std::string name;     // --served-model-name: what requests' "model" must equal
  std::string path;     // the model file or folder
  int64_t created = 0;  // Unix seconds when it was loaded
  ServingEngine* engine = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const ChatPrompt* chat = nullptr;  // null: the model has no chat template; chat requests get 400
  std::string api_key;               // --api-key; empty: no authentication
  bool log_prompts = false;          // --log-prompts: prompts are never logged otherwise
  int32_t max_n = 16;                // choices per request
  metrics::ServingMetrics* metrics = nullptr;  // null: /metrics answers 404
};

}  // namespace kvfold::serving
