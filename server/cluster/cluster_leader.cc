#include "server/cluster/cluster_leader.h"

#include <mutex>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "grpcpp/grpcpp.h"
#include "kvfold/v1/internal.grpc.pb.h"
#include "server/cluster/gloo_stores.h"

namespace kvfold::cluster {

namespace pb = kvfold::internal::v1;

class ClusterLeader::Service final : public pb::Cluster::Service {
 public:
  explicit Service(ClusterLeader& leader) : leader_(leader) {}

  grpc::Status Join(grpc::ServerContext*, const pb::JoinRequest* request,
                    pb::JoinResponse* response) override {
    const GroupShape& shape = leader_.shape_;
    const int node = request->node_rank();
    if (node < 1 || node >= shape.nnodes) {
      return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    absl::StrFormat("node rank %d is outside [1, %d)", node, shape.nnodes));
    }
    if (request->nnodes() != shape.nnodes ||
        request->tensor_parallel_size() != shape.tensor_parallel_size) {
      return Refuse(grpc::StatusCode::FAILED_PRECONDITION,
                    absl::StrFormat("node %d runs --nnodes %d --tensor-parallel-size %d; the "
                                    "leader runs %d and %d",
                                    node, request->nnodes(), request->tensor_parallel_size(),
                                    shape.nnodes, shape.tensor_parallel_size));
    }
    if (request->model_fingerprint() != shape.model_fingerprint) {
      return Refuse(grpc::StatusCode::FAILED_PRECONDITION,
                    absl::StrFormat("node %d loads a different model (fingerprint %s; the "
                                    "leader's is %s)",
                                    node, request->model_fingerprint(), shape.model_fingerprint));
    }
    if (request->attention_plan_id() != shape.attention_plan_id) {
      return Refuse(grpc::StatusCode::FAILED_PRECONDITION,
                    absl::StrFormat("node %d runs a different attention plan ('%s'; the "
                                    "leader's is '%s')",
                                    node, request->attention_plan_id(), shape.attention_plan_id));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!joined_.insert(node).second) {
        return Refuse(grpc::StatusCode::ALREADY_EXISTS,
                      absl::StrFormat("node rank %d has joined already", node));
      }
    }
    // One rank per node on CPU: a node's first rank is its node rank times its ranks.
    const int per_node = shape.tensor_parallel_size / shape.nnodes;
    response->set_rank(node * per_node);
    response->set_world_size(shape.tensor_parallel_size);
    response->set_store_prefix(leader_.prefix_);
    response->set_timeout_seconds(shape.timeout_seconds);
    LOG(INFO) << "tensor-parallel node " << node << " joined";
    return grpc::Status::OK;
  }

  grpc::Status StoreSet(grpc::ServerContext*, const pb::StoreSetRequest* request,
                        pb::StoreSetResponse*) override {
    leader_.store_.Set(request->key(), request->value());
    return grpc::Status::OK;
  }

  grpc::Status StoreGet(grpc::ServerContext*, const pb::StoreGetRequest* request,
                        pb::StoreGetResponse* response) override {
    const std::vector<std::string> keys(request->keys().begin(), request->keys().end());
    absl::StatusOr<std::vector<std::string>> values =
        leader_.store_.Get(keys, absl::Milliseconds(request->timeout_ms()));
    if (!values.ok()) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          std::string(values.status().message()));
    }
    for (std::string& v : *values) response->add_values(std::move(v));
    return grpc::Status::OK;
  }

  grpc::Status Steps(grpc::ServerContext* context, const pb::StepsRequest* request,
                     grpc::ServerWriter<pb::Step>* writer) override {
    return leader_.steps_->Serve(request->rank(), *context, *writer);
  }

 private:
  static grpc::Status Refuse(grpc::StatusCode code, const std::string& why) {
    LOG(WARNING) << "tensor-parallel join refused: " << why;
    return grpc::Status(code, why);
  }

  ClusterLeader& leader_;
  std::mutex mu_;
  std::set<int> joined_;  // guarded by mu_
};

absl::StatusOr<std::unique_ptr<ClusterLeader>> ClusterLeader::Start(const std::string& address,
                                                                    const GroupShape& shape) {
  std::unique_ptr<ClusterLeader> leader(new ClusterLeader());
  leader->shape_ = shape;
  std::random_device random;
  leader->prefix_ = absl::StrFormat("kvfold-%08x%08x", random(), random());
  leader->steps_ = std::make_unique<StepPublisher>(shape.tensor_parallel_size,
                                                   absl::Seconds(shape.timeout_seconds));
  leader->service_ = std::make_unique<Service>(*leader);
  grpc::ServerBuilder builder;
  // A follower pings an idle step stream (grpc_step_source.h) more often than gRPC's default
  // five minutes: let it.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &leader->port_);
  builder.RegisterService(leader->service_.get());
  leader->server_ = builder.BuildAndStart();
  if (leader->server_ == nullptr || leader->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve the tensor-parallel leader on ", address));
  }
  return leader;
}

ClusterLeader::~ClusterLeader() {
  if (steps_ != nullptr) steps_->Close();  // a Steps call would hold up the shutdown
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
}

std::shared_ptr<gloo::rendezvous::Store> ClusterLeader::gloo_store() const {
  return std::make_shared<LocalGlooStore>(const_cast<KeyValueStore&>(store_),
                                          std::chrono::seconds(shape_.timeout_seconds));
}

}  // namespace kvfold::cluster
