// How the ranks of a tensor-parallel group run the same forward steps: rank 0 (the leader, which
// runs the scheduler or the sequence) sends each step's batch to the followers before running it;
// a follower loops receiving batches and running them on its shard, until the leader says stop.
// Messages travel over Communicator::Broadcast (root 0): every int is carried bit for bit in a
// float slot (a broadcast copies bytes and never computes on them), int64s in two slots.
//
// Why the communicator and not gRPC, also across nodes (where DESIGN.md has the leader send step
// plans over gRPC; multi-node bootstrap does use gRPC, server/cluster/): a step's batch must reach
// every rank in order with the collectives of that step, and a broadcast on the same communicator
// is ordered with them by construction, where a separate gRPC stream would need its own sequencing
// against gloo, a thread hop per step and HTTP/2 framing on the decode critical path (a few
// hundred bytes per step, every step). It also leaves one channel to fail: a dead or silent rank
// surfaces in this step's collective within the same timeout, not in one of two transports with
// two timeouts. On GPUs, where NCCL carries device tensors only, the same message can ride a CPU
// gloo group beside NCCL, as vLLM does for its step metadata.
//
// A step message is a header (command, batch sizes, the leader's KV cache geometry), then the
// batch: token ids, positions, query starts, context lengths, block tables, slot mapping and
// logits rows. A follower sizes its own KV cache (its KV heads only) by the header, so a leader
// that rebuilds its cache (a new SequenceRunner) needs no other message.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "kernels/ops.h"
#include "worker/communicator.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"

namespace kvfold {

// Leader: sends `batch`, which runs over `cache`, to the followers. Install it on the leader's
// model with LlamaModel::set_before_forward.
absl::Status BroadcastStep(Communicator& comm, const ForwardBatch& batch, const KvCache& cache);

// Leader: tells the followers to return from FollowSteps (OK).
absl::Status BroadcastStop(Communicator& comm);

// Follower: runs every step the leader sends on `model` (this rank's shard, loaded with the same
// plan) over a KV cache of its own, until the leader's stop (OK) or a failed collective or
// forward (the error: a dead or silent leader surfaces within the communicator's timeout).
absl::Status FollowSteps(LlamaModel& model, Ops& ops, Communicator& comm);

}  // namespace kvfold
