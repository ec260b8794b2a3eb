// The kvfold.v1.KvFold service on gRPC's callback API: the streaming calls run as
// GenerationStream reactors, the unary ones answer inline (tokenizer work, no engine wait).
// Every call is authenticated (ServedModel::api_key) and checked for the model name first.
#pragma once

#include "grpcpp/grpcpp.h"
#include "kvfold/v1/kvfold.grpc.pb.h"
#include "server/serving/served_model.h"

namespace kvfold::rpc {

class KvFoldService final : public v1::KvFold::CallbackService {
 public:
  // `model`'s engine, tokenizer and chat prompt must outlive the service.
  explicit KvFoldService(serving::ServedModel model) : model_(std::move(model)) {}

  ::grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      ::grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  ::grpc::ServerWriteReactor<v1::GenerateResponse>* Chat(::grpc::CallbackServerContext* context,
                                                         const v1::ChatRequest* request) override;
  ::grpc::ServerUnaryReactor* Tokenize(::grpc::CallbackServerContext* context,
                                       const v1::TokenizeRequest* request,
                                       v1::TokenizeResponse* response) override;
  ::grpc::ServerUnaryReactor* Detokenize(::grpc::CallbackServerContext* context,
                                         const v1::DetokenizeRequest* request,
                                         v1::DetokenizeResponse* response) override;
  ::grpc::ServerUnaryReactor* ListModels(::grpc::CallbackServerContext* context,
                                         const v1::ListModelsRequest* request,
                                         v1::ListModelsResponse* response) override;
  ::grpc::ServerUnaryReactor* GetModelInfo(::grpc::CallbackServerContext* context,
                                           const v1::GetModelInfoRequest* request,
                                           v1::ModelInfo* response) override;

 private:
  // UNAUTHENTICATED without the right Bearer key, NOT_FOUND for another model's name.
  absl::Status Admit(const ::grpc::CallbackServerContext& context, const std::string& model) const;
  // A stream that fails at once with `status`.
  ::grpc::ServerWriteReactor<v1::GenerateResponse>* Refuse(const absl::Status& status);

  const serving::ServedModel model_;
};

}  // namespace kvfold::rpc
