// kvfold's gRPC front end: the kvfold.v1.KvFold service, the standard grpc.health.v1 health
// service and server reflection on one port. Streams run on gRPC's callback API, so thousands of
// open streams hold no thread each.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/serving/served_model.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace kvfold::rpc {

class KvFoldService;

class GrpcFrontEnd {
 public:
  // Listens on host:port (port 0: an ephemeral one, see port()) and starts serving, health
  // SERVING. `model`'s engine, tokenizer and chat prompt must outlive the front end.
  // Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcFrontEnd>> Start(const serving::ServedModel& model,
                                                             const std::string& host, int port);
  // Shuts down at once if Shutdown was not called.
  ~GrpcFrontEnd();

  int port() const { return port_; }

  // The health service's status, for the whole server and for kvfold.v1.KvFold: NOT_SERVING
  // tells load balancers to send no more work (set it when draining starts).
  void SetServing(bool serving);

  // Stops accepting calls, lets calls in progress run for up to `deadline`, then cancels the rest
  // (which aborts their generations) and returns once every call is done. Idempotent.
  void Shutdown(absl::Duration deadline);

 private:
  GrpcFrontEnd() = default;

  std::unique_ptr<KvFoldService> service_;
  std::unique_ptr<::grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace kvfold::rpc
