#include "server/grpc/kvfold_service.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "server/api/openai_request.h"
#include "server/api/sampling_fields.h"
#include "server/grpc/generation_stream.h"
#include "server/grpc/proto_convert.h"

namespace kvfold::rpc {
namespace {

// Compares without an early exit, so the time taken does not tell how much of a guess was right.
bool SameSecret(std::string_view given, std::string_view key) {
  if (given.size() != key.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < key.size(); ++i) diff |= given[i] ^ key[i];
  return diff == 0;
}

::grpc::ServerUnaryReactor* Answer(::grpc::CallbackServerContext* context,
                                   const absl::Status& status) {
  ::grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

absl::Status KvFoldService::Admit(const ::grpc::CallbackServerContext& context,
                                  const std::string& model) const {
  if (!model_.api_key.empty()) {
    const auto& metadata = context.client_metadata();
    auto it = metadata.find("authorization");
    std::string_view value;
    if (it != metadata.end()) value = std::string_view(it->second.data(), it->second.size());
    constexpr std::string_view kBearer = "Bearer ";
    if (value.substr(0, kBearer.size()) != kBearer ||
        !SameSecret(value.substr(kBearer.size()), model_.api_key)) {
      return absl::UnauthenticatedError(
          "missing or wrong API key: send the metadata 'authorization: Bearer <key>'");
    }
  }
  if (!model.empty() && model != model_.name) {
    return absl::NotFoundError(absl::StrCat("The model '", model,
                                            "' does not exist; this server serves '", model_.name,
                                            "' (or leave model empty)."));
  }
  return absl::OkStatus();
}

::grpc::ServerWriteReactor<v1::GenerateResponse>* KvFoldService::Refuse(
    const absl::Status& status) {
  return GenerationStream::Start(*model_.engine, *model_.tokenizer, status);
}

::grpc::ServerWriteReactor<v1::GenerateResponse>* KvFoldService::Generate(
    ::grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  if (absl::Status s = Admit(*context, request->model()); !s.ok()) return Refuse(s);
  if (model_.log_prompts) {
    if (request->has_token_ids()) {
      LOG(INFO) << "gRPC Generate: " << request->token_ids().ids_size() << " prompt token ids";
    } else {
      LOG(INFO) << "gRPC Generate prompt: " << request->text();
    }
  }
  const serving::ServingEngine& engine = *model_.engine;
  return GenerationStream::Start(*model_.engine, *model_.tokenizer,
                                 ToGenerationRequest(*request, *model_.tokenizer,
                                                     engine.vocab_size(), engine.max_model_len()));
}

::grpc::ServerWriteReactor<v1::GenerateResponse>* KvFoldService::Chat(
    ::grpc::CallbackServerContext* context, const v1::ChatRequest* request) {
  if (absl::Status s = Admit(*context, request->model()); !s.ok()) return Refuse(s);
  if (model_.chat == nullptr) {
    return Refuse(absl::FailedPreconditionError(absl::StrCat(
        "The model '", model_.name,
        "' has no chat template; start the server with --chat-template FILE, or use Generate.")));
  }
  if (request->messages().empty()) {
    return Refuse(absl::InvalidArgumentError("messages is empty"));
  }
  std::vector<api::ChatMessage> messages;
  for (const v1::ChatMessage& m : request->messages()) {
    api::ChatMessage message{m.role(), m.content(), std::nullopt};
    if (m.has_name()) message.name = m.name();
    messages.push_back(std::move(message));
  }
  absl::StatusOr<std::string> prompt = model_.chat->Render(messages);
  if (!prompt.ok()) {
    return Refuse(absl::InvalidArgumentError(
        absl::StrCat("the chat template refused the messages: ", prompt.status().message())));
  }
  if (model_.log_prompts) LOG(INFO) << "gRPC Chat prompt: " << *prompt;
  // The rendered text already holds the template's special tokens.
  absl::StatusOr<std::vector<int32_t>> ids =
      model_.tokenizer->Encode(*prompt, /*add_special_tokens=*/false);
  if (!ids.ok()) {
    return Refuse(absl::InvalidArgumentError(absl::StrCat("messages: ", ids.status().message())));
  }
  return GenerationStream::Start(*model_.engine, *model_.tokenizer,
                                 ToGenerationRequest(*std::move(ids), request->sampling(),
                                                     model_.engine->max_model_len(), "messages"));
}

::grpc::ServerUnaryReactor* KvFoldService::Tokenize(::grpc::CallbackServerContext* context,
                                                    const v1::TokenizeRequest* request,
                                                    v1::TokenizeResponse* response) {
  if (absl::Status s = Admit(*context, request->model()); !s.ok()) return Answer(context, s);
  const bool add_special = !request->has_add_special_tokens() || request->add_special_tokens();
  absl::StatusOr<std::vector<int32_t>> ids = model_.tokenizer->Encode(request->text(), add_special);
  if (!ids.ok()) {
    return Answer(context,
                  absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message())));
  }
  response->mutable_token_ids()->Add(ids->begin(), ids->end());
  response->set_max_model_len(model_.engine->max_model_len());
  return Answer(context, absl::OkStatus());
}

::grpc::ServerUnaryReactor* KvFoldService::Detokenize(::grpc::CallbackServerContext* context,
                                                      const v1::DetokenizeRequest* request,
                                                      v1::DetokenizeResponse* response) {
  if (absl::Status s = Admit(*context, request->model()); !s.ok()) return Answer(context, s);
  const int32_t vocab = model_.tokenizer->vocab_size();
  for (int i = 0; i < request->token_ids_size(); ++i) {
    const int32_t id = request->token_ids(i);
    if (id < 0 || id >= vocab) {
      return Answer(context, absl::InvalidArgumentError(absl::StrCat(
                                 "token_ids[", i, "] = ", id,
                                 " is outside the vocabulary (ids 0 to ", vocab - 1, ")")));
    }
  }
  const bool skip_special = !request->has_skip_special_tokens() || request->skip_special_tokens();
  std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
  absl::StatusOr<std::string> text = model_.tokenizer->Decode(ids, skip_special);
  if (!text.ok()) {
    return Answer(context,
                  absl::InvalidArgumentError(absl::StrCat("token_ids: ", text.status().message())));
  }
  response->set_text(*std::move(text));
  return Answer(context, absl::OkStatus());
}

::grpc::ServerUnaryReactor* KvFoldService::ListModels(::grpc::CallbackServerContext* context,
                                                      const v1::ListModelsRequest* request,
                                                      v1::ListModelsResponse* response) {
  if (absl::Status s = Admit(*context, ""); !s.ok()) return Answer(context, s);
  v1::ModelCard* card = response->add_models();
  card->set_id(model_.name);
  card->set_created(model_.created);
  card->set_owned_by("kvfold");
  card->set_max_model_len(model_.engine->max_model_len());
  return Answer(context, absl::OkStatus());
}

::grpc::ServerUnaryReactor* KvFoldService::GetModelInfo(::grpc::CallbackServerContext* context,
                                                        const v1::GetModelInfoRequest* request,
                                                        v1::ModelInfo* response) {
  if (absl::Status s = Admit(*context, request->model()); !s.ok()) return Answer(context, s);
  const serving::ServingEngine& engine = *model_.engine;
  const serving::PoolInfo& pool = engine.pool();
  response->set_name(model_.name);
  response->set_max_model_len(engine.max_model_len());
  response->set_vocab_size(engine.vocab_size());
  v1::KvPool* kv = response->mutable_kv_pool();
  kv->set_num_blocks(pool.num_blocks);
  kv->set_block_size(pool.block_size);
  kv->set_bytes_per_token(pool.bytes_per_token);
  kv->set_unfolded_bytes_per_token(pool.unfolded_bytes_per_token);
  kv->set_memory_bytes(pool.memory_bytes);
  kv->set_kv_dtype(std::string(DTypeName(pool.kv_dtype)));
  kv->set_capacity_tokens(int64_t{pool.num_blocks} * pool.block_size);
  kv->set_free_blocks(engine.Stats().num_free_blocks);
  response->set_live_requests(engine.num_live());
  response->set_has_chat_template(model_.chat != nullptr);
  response->set_max_top_logprobs(api::kMaxTopLogprobs);
  return Answer(context, absl::OkStatus());
}

}  // namespace kvfold::rpc
