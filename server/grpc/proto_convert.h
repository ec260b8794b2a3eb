// The gRPC API's messages to and from the serving engine's: requests validated into a
// GenerationRequest (or the status that names the bad field), deltas into stream responses.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "kvfold/v1/kvfold.pb.h"
#include "server/serving/serving_engine.h"
#include "server/tokenizer/tokenizer.h"

namespace kvfold::rpc {

// A Generate call's prompt (text tokenized, or token ids checked against the vocabulary) and
// parameters, ready to submit. InvalidArgument naming the field otherwise.
absl::StatusOr<serving::GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                               const Tokenizer& tokenizer,
                                                               int32_t vocab_size,
                                                               int32_t max_model_len);

// A Chat call's rendered prompt text becomes `prompt_token_ids`; the rest as for Generate.
absl::StatusOr<serving::GenerationRequest> ToGenerationRequest(
    std::vector<int32_t> prompt_token_ids, const v1::SamplingParams& sampling,
    int32_t max_model_len, const char* prompt_param);

// One stream response; `tokenizer` spells the logprobs' tokens.
v1::GenerateResponse ToResponse(const serving::GenerationDelta& delta, const Tokenizer& tokenizer);

// The same code (absl's codes are gRPC's) and message.
::grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace kvfold::rpc
