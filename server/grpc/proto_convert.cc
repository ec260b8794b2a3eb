#include "server/grpc/proto_convert.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/api/openai_request.h"
#include "server/api/sampling_fields.h"
#include "worker/status_macros.h"

namespace kvfold::rpc {
namespace {

// What an unset temperature means: OpenAI's and vLLM's default, not the engine's greedy 0.
constexpr float kDefaultTemperature = 1.0f;

// The proto's optional fields as the JSON edges' SamplingFields, so the mapping onto
// SamplingParams is the one the HTTP API uses.
api::SamplingFields ToSamplingFields(const v1::SamplingParams& s) {
  api::SamplingFields f;
  if (s.has_temperature()) f.temperature = s.temperature();
  if (s.has_top_p()) f.top_p = s.top_p();
  if (s.has_top_k()) f.top_k = s.top_k() == -1 ? 0 : s.top_k();  // -1: vLLM's "off"
  if (s.has_min_p()) f.min_p = s.min_p();
  if (s.has_seed()) f.seed = s.seed();
  if (s.has_repetition_penalty()) f.repetition_penalty = s.repetition_penalty();
  if (s.has_frequency_penalty()) f.frequency_penalty = s.frequency_penalty();
  if (s.has_presence_penalty()) f.presence_penalty = s.presence_penalty();
  for (const auto& [id, bias] : s.logit_bias()) f.logit_bias.emplace_back(id, bias);
  // A proto map has no order; the sampler's result must not depend on it.
  std::sort(f.logit_bias.begin(), f.logit_bias.end());
  if (s.logprobs()) f.logprobs = true;  // top_logprobs > 0 implies it (ToSamplingParams)
  f.top_logprobs = s.top_logprobs();
  return f;
}

absl::Status InvalidArgument(auto... parts) {
  return absl::InvalidArgumentError(absl::StrCat(parts...));
}

v1::FinishReason ToFinishReason(const std::string& reason) {
  if (reason == "stop") return v1::FINISH_REASON_STOP;
  if (reason == "length") return v1::FINISH_REASON_LENGTH;
  return v1::FINISH_REASON_ABORT;
}

// The token decoded on its own, special tokens spelled out.
std::string TokenText(const Tokenizer& tokenizer, int32_t id) {
  absl::StatusOr<std::string> text = tokenizer.Decode({id}, /*skip_special_tokens=*/false);
  return text.ok() ? *std::move(text) : std::string();
}

}  // namespace

absl::StatusOr<serving::GenerationRequest> ToGenerationRequest(
    std::vector<int32_t> prompt_token_ids, const v1::SamplingParams& s, int32_t max_model_len,
    const char* prompt_param) {
  if (prompt_token_ids.empty()) return InvalidArgument(prompt_param, " is empty");
  SamplingParams defaults;
  defaults.temperature = kDefaultTemperature;
  serving::GenerationRequest request;
  request.sampling = api::ToSamplingParams(ToSamplingFields(s), defaults);
  if (!s.has_seed()) request.sampling.seed = serving::RandomSeed();
  KVFOLD_RETURN_IF_ERROR(ValidateSamplingParams(request.sampling));

  std::optional<int32_t> max_tokens;
  if (s.has_max_tokens()) {
    if (s.max_tokens() < 1) return InvalidArgument("max_tokens must be >= 1, got ", s.max_tokens());
    max_tokens = s.max_tokens();
  }
  api::ApiOr<int32_t> fits = api::CheckContextLength(static_cast<int64_t>(prompt_token_ids.size()),
                                                     max_tokens, max_model_len, prompt_param);
  if (!fits.ok()) return absl::InvalidArgumentError(fits.error().message);
  request.max_tokens = *fits;

  for (const std::string& stop : s.stop()) {
    if (!stop.empty()) request.stop.push_back(stop);
  }
  for (int i = 0; i < s.stop_token_ids_size(); ++i) {
    if (s.stop_token_ids(i) < 0) {
      return InvalidArgument("stop_token_ids[", i, "] must be a token id >= 0, got ",
                             s.stop_token_ids(i));
    }
    request.stop_token_ids.push_back(s.stop_token_ids(i));
  }
  request.ignore_eos = s.ignore_eos();
  if (s.has_prompt_logprobs()) {
    if (s.prompt_logprobs() < 0 || s.prompt_logprobs() > api::kMaxTopLogprobs) {
      return InvalidArgument("prompt_logprobs must be in [0, ", api::kMaxTopLogprobs, "], got ",
                             s.prompt_logprobs());
    }
    request.prompt_logprobs = s.prompt_logprobs();
  }
  request.prompt_token_ids = std::move(prompt_token_ids);
  return request;
}

absl::StatusOr<serving::GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                               const Tokenizer& tokenizer,
                                                               int32_t vocab_size,
                                                               int32_t max_model_len) {
  std::vector<int32_t> ids;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      const bool add_special = !request.has_add_special_tokens() || request.add_special_tokens();
      absl::StatusOr<std::vector<int32_t>> encoded = tokenizer.Encode(request.text(), add_special);
      if (!encoded.ok()) return InvalidArgument("text: ", encoded.status().message());
      ids = *std::move(encoded);
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      ids.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= vocab_size) {
          return InvalidArgument("token_ids[", i, "] = ", ids[i],
                                 " is outside the vocabulary (ids 0 to ", vocab_size - 1, ")");
        }
      }
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return InvalidArgument("the prompt is missing: set text or token_ids");
  }
  return ToGenerationRequest(std::move(ids), request.sampling(), max_model_len, "prompt");
}

v1::GenerateResponse ToResponse(const serving::GenerationDelta& delta, const Tokenizer& tokenizer) {
  v1::GenerateResponse response;
  response.mutable_token_ids()->Add(delta.token_ids.begin(), delta.token_ids.end());
  response.set_text(delta.text);
  auto add = [&](const TokenLogprob& lp, v1::TokenLogprob* out) {
    out->set_token_id(lp.token_id);
    out->set_token(TokenText(tokenizer, lp.token_id));
    out->set_logprob(lp.logprob);
    out->set_rank(lp.rank);
    for (const auto& [id, logprob] : lp.top) {
      v1::TopLogprob* top = out->add_top_logprobs();
      top->set_token_id(id);
      top->set_token(TokenText(tokenizer, id));
      top->set_logprob(logprob);
    }
  };
  for (const TokenLogprob& lp : delta.logprobs) add(lp, response.add_logprobs());
  for (const TokenLogprob& lp : delta.prompt_logprobs) add(lp, response.add_prompt_logprobs());
  if (delta.finish_reason.has_value()) {
    response.set_finish_reason(ToFinishReason(*delta.finish_reason));
    v1::Usage* usage = response.mutable_usage();
    usage->set_prompt_tokens(delta.usage.prompt_tokens);
    usage->set_completion_tokens(delta.usage.completion_tokens);
    usage->set_cached_tokens(delta.usage.cached_tokens);
  }
  return response;
}

::grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return ::grpc::Status::OK;
  return ::grpc::Status(static_cast<::grpc::StatusCode>(status.code()),
                        std::string(status.message()));
}

}  // namespace kvfold::rpc
