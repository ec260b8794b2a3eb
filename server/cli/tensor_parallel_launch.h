// `--tensor-parallel-size N` on CPU, on one node or several.
//
// One node: the process the user started is rank 0, the leader; it starts N - 1 followers,
// processes of the same binary with the internal flags --tp-rank and --tp-store. The ranks meet
// through a gloo FileStore in a fresh temporary folder, then each loads only its shard of the
// model.
//
// Several nodes (--nnodes M, one process and, on CPU, one rank per node): node rank 0 is the
// leader and serves the internal gRPC Cluster service (server/cluster/) on --leader-address; every
// other node joins through it (its rank, the group's size; the leader checks model and plan) and
// the ranks meet through the rendezvous store that service carries, so no shared filesystem is
// needed.
//
// Either way the leader runs generation or the server as usual, its model sending every forward
// step to the followers (steps()), which run it on their shards (Follow) until the leader
// finishes. The steps travel (worker/step_transport.h) over the communicator on one node
// (worker/step_broadcast.h) and over the leader's gRPC Cluster.Steps stream across nodes
// (server/cluster/step_publisher.h); only the collectives use the communicator there.
//
// GPUs (--device cuda): one rank per GPU, GPU = the rank's index on its node (one node: its rank;
// several nodes: one rank and GPU 0 per node). The ranks still meet and exchange steps over gloo as
// above; the model's collectives go over NCCL (worker/nccl_communicator.h), ordered on the CUDA
// ops' stream, its unique id broadcast from rank 0 over the gloo group (PlaceModel).
//
// Failure: a follower that dies or stops answering fails the leader's next collective within
// --tensor-parallel-timeout; a follower process that exits (one node) or whose step stream breaks
// (several nodes) is seen at once. OnFailure hears of it. The leader then reports the error, ends
// its remaining followers and exits non-zero. A follower whose leader goes away fails the same
// way (a failed collective, or its step stream breaking) and exits non-zero.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/cli/device_setup.h"
#include "server/cli/model_setup.h"
#include "server/cli/tensor_parallel_flags.h"
#include "worker/gloo_communicator.h"
#include "worker/llama_model.h"
#include "worker/step_transport.h"
#include "worker/tensor_parallel.h"
#include "worker/watched_communicator.h"

ABSL_DECLARE_FLAG(int, tp_rank);
ABSL_DECLARE_FLAG(std::string, tp_store);

namespace kvfold::cluster {
class ClusterLeader;
}  // namespace kvfold::cluster

namespace kvfold::cli {

// This process's place in its tensor-parallel group and the group's communicator. The leader's
// group also owns its followers: Finish (or the destructor, after a failure) ends them.
class TensorParallelGroup {
 public:
  // From the flags: size 1 (no communicator, nothing started); the single-node leader (starts
  // its followers with `command` and `follower_flags`, e.g. --model=..., then joins); a
  // single-node follower; or a node of a multi-node group (`model_path` and --attention-plan are
  // checked against the leader's).
  static absl::StatusOr<std::unique_ptr<TensorParallelGroup>> Join(
      const std::string& command, const std::string& model_path,
      const std::vector<std::string>& follower_flags);
  ~TensorParallelGroup();

  // This rank's shard; its communicator is the gloo group's (on GPUs the model's is NCCL's).
  TensorParallel place() const { return {rank_, size_, comm()}; }
  bool leader() const { return rank_ == 0; }
  // The gloo group: the steps on one node, and the model's collectives on the CPU.
  Communicator* comm() const { return watched_.get(); }
  // This rank's index on its node, the GPU it drives on --device cuda.
  int local_rank() const { return nnodes_ > 1 ? 0 : rank_; }

  // Where LoadModel puts this rank's model on `device`: place(), GPU local_rank(), and on a GPU
  // with size > 1 the NCCL communicator made once the ops exist. Every rank loads its model (so
  // joins NCCL) in the same order relative to the steps: after Join, before Follow or steps().
  ModelPlacement PlaceModel(Device device);

  // Leader (size > 1): where the model sends each forward step before running it.
  StepSink& steps() const { return *steps_; }

  // Follower: runs the leader's steps on `model` until the leader finishes (OK) or fails.
  absl::Status Follow(LlamaModel& model, Ops& ops);

  // Leader: `on_failure` hears of the group's first failure, once: a failed collective (on the
  // thread that ran it), a follower process that exited (on a watcher thread) or a follower's
  // broken step stream (on its gRPC thread). It must not use the communicator.
  void OnFailure(std::function<void(const absl::Status&)> on_failure);

  // Leader: stops the followers and waits for them; an error if one failed. Nothing else may use
  // the communicators (the model's included) meanwhile or afterwards.
  absl::Status Finish();

  // Leader, after a failure: ends the followers it started (no stop message: the communicator is
  // broken).
  void Abandon();

  // "tp: rank 0 of 2: 1234 all-reduces in 0.52 s (0.42 ms each), ...": the collectives so far.
  std::string StatsLine() const;

 private:
  TensorParallelGroup() = default;
  absl::Status JoinNodes(const std::string& model_path, int timeout);
  // NCCL on GPU local_rank() ordered on `ops`' stream; rank 0's unique id travels over gloo.
  absl::StatusOr<Communicator*> ConnectDevice(Ops& ops);
  // After the finish marker (leader and followers alike): destroys NCCL; the model must not run a
  // collective afterwards.
  void CloseDevice();
  void WatchFollowers();
  void StopWatching();
  void EndFollowers();

  int rank_ = 0;
  int size_ = 1;
  int nnodes_ = 1;
  int timeout_seconds_ = 30;
  std::unique_ptr<GlooCommunicator> gloo_;
  std::unique_ptr<WatchedCommunicator> watched_;
  // GPUs: the model's NCCL communicator (an NcclCommunicator) and its watched wrapper.
  std::unique_ptr<Communicator> nccl_;
  std::unique_ptr<WatchedCommunicator> device_watched_;
  bool model_on_nccl_ = false;
  bool finished_ = false;  // Finish or Follow returned OK: NCCL may be destroyed, not aborted
  std::unique_ptr<cluster::ClusterLeader> cluster_;  // multi-node leader only
  std::unique_ptr<StepSink> broadcast_steps_;        // single-node leader only
  StepSink* steps_ = nullptr;                        // leader: broadcast_steps_ or cluster_'s
  std::shared_ptr<StepSource> step_stream_;          // multi-node follower only
  std::mutex followers_mu_;
  std::vector<pid_t> followers_;  // single-node leader only; 0 once reaped. Guarded.
  std::string store_dir_;         // single-node leader only: removed with the group
  std::function<void(const absl::Status&)> on_failure_;
  std::atomic<bool> finishing_{false};
  std::thread watcher_;
};

}  // namespace kvfold::cli
