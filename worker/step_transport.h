// How the ranks of a tensor-parallel group run the same forward steps: rank 0 (the leader, which
// runs the scheduler or the sequence) sends each step's batch to the followers before running it
// (LlamaModel::set_before_forward calls a StepSink); a follower loops taking steps from a
// StepSource and running them on its shard (FollowSteps) until the leader's finish marker.
//
// Two transports carry the same StepMessage:
// - One node (--tensor-parallel-size N, followers spawned as processes): a broadcast on the
//   group's communicator (worker/step_broadcast.h). It is ordered with the step's collectives by
//   construction and needs no second channel between processes that already share one.
// - Several nodes (--nnodes > 1): the leader's internal gRPC service (Cluster.Steps,
//   proto/kvfold/v1/internal.proto; server/cluster/step_publisher.h on the leader,
//   server/cluster/grpc_step_source.h on a follower), as DESIGN.md has it: the step plan travels
//   on the control channel the nodes bootstrapped over, and only tensors use the communicator.
//   Ordering needs nothing more: the leader publishes step k before running its forward, whose
//   collectives cannot complete until every follower has read step k and joined them, so at most
//   one step is ahead of any follower.
//
// A follower sizes its own KV cache (its KV heads only) by the leader's cache geometry in each
// step, so a leader that rebuilds its cache (a new SequenceRunner) needs no other message.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/ops.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"

namespace kvfold {

// One step as flat arrays (a ForwardBatch's spans, owned), or the leader's finish marker.
struct StepMessage : ForwardBatchArrays {
  bool finish = false;
  // The leader's KV cache geometry.
  int32_t cache_blocks = 0;
  int32_t cache_block_size = 0;
  int32_t cache_dtype = 0;

  // A copy of `batch`, which runs over `cache`.
  static StepMessage Of(const ForwardBatch& batch, const KvCache& cache);
  static StepMessage Finish();

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(context_len.size()); }
  // INTERNAL unless the arrays agree in size and the geometry is positive (a step from the wire).
  absl::Status Validate() const;
  // Views into this message.
  ForwardBatch batch() const { return View(); }

  bool operator==(const StepMessage&) const = default;
};

// The leader's end: Send before each forward, Finish once at the end (the followers return OK).
class StepSink {
 public:
  virtual ~StepSink() = default;
  virtual absl::Status Send(const ForwardBatch& batch, const KvCache& cache) = 0;
  virtual absl::Status Finish() = 0;
  // Between steps, when the leader has been idle a while: followers waiting with a timeout (the
  // communicator's) learn that the leader lives. A no-op where the wait has no timeout.
  virtual absl::Status Keepalive() { return absl::OkStatus(); }
};

// A follower's end: the leader's next step (blocking), the finish marker included.
class StepSource {
 public:
  virtual ~StepSource() = default;
  virtual absl::Status Next(StepMessage& step) = 0;
};

// Follower: runs every step from `source` on `model` (this rank's shard, loaded with the same
// plan) over a KV cache of its own, until the leader's finish marker (OK) or a failed read or
// forward (the error).
absl::Status FollowSteps(LlamaModel& model, Ops& ops, StepSource& source);

}  // namespace kvfold
