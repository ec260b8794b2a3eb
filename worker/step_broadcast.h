// The one-node step transport (worker/step_transport.h says which transport runs when): the
// leader's StepMessage travels over Communicator::Broadcast (root 0) on the group's own
// communicator. Every int is carried bit for bit in a float slot (a broadcast copies bytes and
// never computes on them), int64s in two slots.
//
// Why the communicator on one node: the broadcast is ordered with the step's collectives by
// construction, the followers are processes of this one that share nothing else with the leader,
// and a dead or silent rank surfaces in the same collective within the same timeout. Across nodes
// the steps ride the leader's gRPC Cluster service instead (server/cluster/step_publisher.h).
//
// A message is a header (command, array sizes, the leader's KV cache geometry) in one broadcast,
// then the arrays in another: token ids, positions, query starts, context lengths, block tables,
// slot mapping and logits rows.
#pragma once

#include "absl/status/status.h"
#include "worker/communicator.h"
#include "worker/step_transport.h"

namespace kvfold {

// Leader, rank 0 of `comm` (which outlives this).
class BroadcastStepSink final : public StepSink {
 public:
  explicit BroadcastStepSink(Communicator& comm) : comm_(comm) {}
  absl::Status Send(const ForwardBatch& batch, const KvCache& cache) override;
  absl::Status Finish() override;
  absl::Status Keepalive() override;

 private:
  Communicator& comm_;
};

// Follower: receives what rank 0's BroadcastStepSink sends. A dead or silent leader surfaces as
// the broadcast's error within the communicator's timeout.
class BroadcastStepSource final : public StepSource {
 public:
  explicit BroadcastStepSource(Communicator& comm) : comm_(comm) {}
  absl::Status Next(StepMessage& step) override;

 private:
  Communicator& comm_;
};

}  // namespace kvfold
