#include "server/grpc/grpc_front_end.h"

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/grpc/kvfold_service.h"

namespace kvfold::rpc {
namespace {

// host:port as gRPC parses it: IPv6 literals in brackets.
std::string ListenAddress(const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
  return ipv6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcFrontEnd>> GrpcFrontEnd::Start(const serving::ServedModel& model,
                                                                  const std::string& host,
                                                                  int port) {
  if (model.engine == nullptr || model.tokenizer == nullptr) {
    return absl::InvalidArgumentError("GrpcFrontEnd needs a model with an engine and a tokenizer");
  }
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("gRPC port ", port, " is not in 0..65535"));
  }
  // Both are process-wide switches read when a server is built.
  ::grpc::EnableDefaultHealthCheckService(true);
  ::grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<GrpcFrontEnd> front(new GrpcFrontEnd());
  front->service_ = std::make_unique<KvFoldService>(model);
  const std::string address = ListenAddress(host, port);
  ::grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default: a second server on a busy port would start and share it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(address, ::grpc::InsecureServerCredentials(), &front->port_);
  builder.RegisterService(front->service_.get());
  front->server_ = builder.BuildAndStart();
  if (front->server_ == nullptr || front->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("gRPC cannot listen on ", address));
  }
  front->SetServing(true);
  LOG(INFO) << "gRPC: kvfold.v1.KvFold, grpc.health.v1 and reflection on "
            << ListenAddress(host, front->port_);
  return front;
}

GrpcFrontEnd::~GrpcFrontEnd() { Shutdown(absl::ZeroDuration()); }

void GrpcFrontEnd::SetServing(bool serving) {
  if (server_ == nullptr || shut_down_) return;
  ::grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(v1::KvFold::service_full_name(), serving);
}

void GrpcFrontEnd::Shutdown(absl::Duration deadline) {
  if (server_ == nullptr || shut_down_) return;
  SetServing(false);
  shut_down_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + deadline));
  server_->Wait();
}

}  // namespace kvfold::rpc
