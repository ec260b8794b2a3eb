// What a client asks the engine for, and what the engine streams back: token-level, native types
// (the server converts JSON/protobuf at its edge; text work such as stop strings stays there).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvfold {

using RequestId = uint64_t;

// How the worker turns logits into a token. Seeded sampling is keyed by (seed, output index), so
// a request's tokens do not depend on what else is in the batch or on preemption.
struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  uint64_t seed = 0;
  bool logprobs = false;  // return each sampled token's log-probability (RequestOutput::logprobs)
};

struct Request {
  RequestId id = 0;
  std::vector<int32_t> prompt_token_ids;
  SamplingParams sampling;
  int32_t max_tokens = 16;
  std::vector<int32_t> stop_token_ids;  // besides the model's EOS ids
  bool ignore_eos = false;
  // Lower runs first, as in vLLM; among equals, earlier arrival first. Preemption picks the
  // lowest-priority (highest value), most recently admitted running request.
  int32_t priority = 0;
};

enum class FinishReason { kStop, kLength, kAbort, kError };
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "abort", "error"

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens served from the prefix cache
};

// One delta of a request's output stream. The last delta has finish_reason and usage set.
struct RequestOutput {
  RequestId id = 0;
  std::vector<int32_t> token_ids;  // tokens produced since the previous delta
  std::vector<float> logprobs;     // one per token_ids entry when sampling.logprobs is set
  std::optional<FinishReason> finish_reason;
  std::string error;  // set when finish_reason is kError
  Usage usage;        // final counts, on the last delta
};

}  // namespace kvfold
