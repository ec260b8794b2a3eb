// The multi-node leader's StepSink (worker/step_transport.h): Send puts the step on a queue per
// follower rank, which that rank's Cluster.Steps stream (cluster_leader.cc calls Serve) writes to
// the follower node.
//
// Run-ahead is bounded by the steps themselves: step k's forward on the leader cannot finish its
// collectives until each follower has read step k, so a queue holds one or two steps. Send still
// waits (up to the timeout) for room beyond kMaxQueued, so a follower that stops reading cannot
// make the leader buffer without bound.
//
// A follower stream that breaks before the finish marker (its node died or left) fails the
// leader at once: the OnFailure callback hears of it, and every later Send or Finish fails.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/sync_stream.h"
#include "kvfold/v1/internal.pb.h"
#include "worker/step_transport.h"

namespace kvfold::cluster {

class StepPublisher final : public StepSink {
 public:
  static constexpr size_t kMaxQueued = 2;

  // Followers are ranks [1, world_size). Send and Finish wait at most `timeout` for a follower.
  StepPublisher(int world_size, absl::Duration timeout);

  absl::Status Send(const ForwardBatch& batch, const KvCache& cache) override;
  // Send's work, for a step already in flat arrays.
  absl::Status Publish(const StepMessage& step);
  // Sends the finish marker and waits until every follower's stream has written it.
  absl::Status Finish() override;

  // Called once, on the stream's thread, when the first follower stream breaks before the finish
  // marker (or at once when one did already). Must not call back into this publisher.
  void SetOnFailure(std::function<void(const absl::Status&)> on_failure);

  // The Steps call of follower `rank`: writes its steps to `writer` until the finish marker (OK),
  // Close (CANCELLED) or a broken stream (UNAVAILABLE).
  grpc::Status Serve(int rank, grpc::ServerContext& context,
                     grpc::ServerWriter<kvfold::internal::v1::Step>& writer);

  // Makes every Serve return and every later Send fail (before the gRPC server shuts down).
  void Close();

 private:
  struct Follower {
    std::deque<std::shared_ptr<const kvfold::internal::v1::Step>> queue;
    bool attached = false;
    bool delivered_finish = false;
    bool broken = false;
  };

  // Marks `rank` broken and reports it; `lock` is released.
  grpc::Status Broke(int rank, std::unique_lock<std::mutex>& lock, const std::string& why);
  absl::Status BrokenError(int rank) const;

  const absl::Duration timeout_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<Follower> followers_;                      // by rank; [0] unused. Guarded by mu_.
  bool closed_ = false;                                  // guarded by mu_
  absl::Status failure_;                                 // the first broken stream; guarded by mu_
  std::function<void(const absl::Status&)> on_failure_;  // guarded by mu_
};

}  // namespace kvfold::cluster
