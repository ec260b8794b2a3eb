// `--tensor-parallel-size N` on one node, on CPU: the process the user started is rank 0, the
// leader; it starts N - 1 followers, processes of the same binary with the internal flags
// --tp-rank and --tp-store. The ranks meet through a gloo FileStore in a fresh temporary folder,
// then each loads only its shard of the model. The leader runs generation as usual, its model
// sending every forward step to the followers (worker/step_broadcast.h), which run it on their
// shards until the leader stops them.
//
// Failure: a follower that dies or stops answering fails the leader's next collective within
// --tensor-parallel-timeout; the leader then reports the error, ends its remaining followers and
// exits non-zero. A follower whose leader goes away fails the same way and exits non-zero.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/gloo_communicator.h"
#include "worker/tensor_parallel.h"

ABSL_DECLARE_FLAG(int, tensor_parallel_size);
ABSL_DECLARE_FLAG(int, tensor_parallel_timeout);
ABSL_DECLARE_FLAG(int, tp_rank);
ABSL_DECLARE_FLAG(std::string, tp_store);

namespace kvfold::cli {

// This process's place in its tensor-parallel group and the group's communicator. The leader's
// group also owns its followers: Finish (or the destructor, after a failure) ends them.
class TensorParallelGroup {
 public:
  // From the flags: size 1 (no communicator, nothing started); the leader (starts its followers
  // with `command` and `follower_flags`, e.g. --model=..., then joins); or a follower (joins).
  static absl::StatusOr<std::unique_ptr<TensorParallelGroup>> Join(
      const std::string& command, const std::vector<std::string>& follower_flags);
  ~TensorParallelGroup();

  TensorParallel place() const { return {rank_, size_, comm_.get()}; }
  bool leader() const { return rank_ == 0; }
  Communicator* comm() const { return comm_.get(); }

  // Leader: stops the followers and waits for them; an error if one failed.
  absl::Status Finish();

 private:
  TensorParallelGroup() = default;
  void EndFollowers();

  int rank_ = 0;
  int size_ = 1;
  std::unique_ptr<GlooCommunicator> comm_;
  std::vector<pid_t> followers_;  // leader only
  std::string store_dir_;         // leader only: removed with the group
};

}  // namespace kvfold::cli
