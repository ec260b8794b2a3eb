// The leader's side of multi-node tensor parallelism: the kvfold.internal.v1.Cluster service on
// --leader-address. It admits each follower node once (same model, plan and group shape), hands
// out ranks and the group's rendezvous namespace, serves the rendezvous store the ranks'
// gloo communicators meet through, and streams each follower rank its forward steps
// (step_publisher.h).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gloo/rendezvous/store.h"
#include "server/cluster/key_value_store.h"
#include "server/cluster/step_publisher.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace kvfold::cluster {

// What every node must agree on, and what the leader hands out.
struct GroupShape {
  int nnodes = 1;
  int tensor_parallel_size = 1;
  std::string model_fingerprint;
  std::string attention_plan_id;
  int timeout_seconds = 30;
};

class ClusterLeader {
 public:
  // Serves on `address` ("HOST:PORT"; port 0: any free port, see port()).
  static absl::StatusOr<std::unique_ptr<ClusterLeader>> Start(const std::string& address,
                                                              const GroupShape& shape);
  ~ClusterLeader();

  int port() const { return port_; }
  // The namespace of this run's keys (fresh per leader: a restarted group never reads old keys).
  const std::string& store_prefix() const { return prefix_; }
  // The rendezvous store for the leader's own communicator (in process).
  std::shared_ptr<gloo::rendezvous::Store> gloo_store() const;
  // The leader's StepSink: what it publishes, each follower's Steps stream reads.
  StepPublisher& steps() { return *steps_; }

 private:
  class Service;
  ClusterLeader() = default;

  int port_ = 0;
  std::string prefix_;
  GroupShape shape_;
  KeyValueStore store_;
  std::unique_ptr<StepPublisher> steps_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace kvfold::cluster
