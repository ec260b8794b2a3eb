// A follower node's side of multi-node tensor parallelism: joins the leader's group over the
// Cluster service (cluster_leader.h), reaches its rendezvous store and reads its steps.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gloo/rendezvous/store.h"
#include "server/cluster/cluster_leader.h"
#include "worker/step_transport.h"

namespace kvfold::cluster {

struct Membership {
  int rank = 0;
  int world_size = 1;
  std::string store_prefix;
  int timeout_seconds = 30;
  std::shared_ptr<gloo::rendezvous::Store> store;  // the leader's, over gRPC
  std::shared_ptr<StepSource> steps;               // this rank's Steps stream (opens on first read)
};

// Joins as node `node_rank` of `shape`, waiting up to `timeout` for the leader to come up. The
// leader's refusal (another model, a taken node rank) is returned with its reason.
absl::StatusOr<Membership> JoinCluster(const std::string& leader_address, int node_rank,
                                       const GroupShape& shape, absl::Duration timeout);

}  // namespace kvfold::cluster
