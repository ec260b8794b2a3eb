// A Communicator that reports its first failed collective: the serving leader turns a dead or
// silent tensor-parallel rank into "not ready, exit non-zero" the moment a collective fails,
// whichever thread ran it. Forwards every call to the wrapped communicator unchanged.
#pragma once

#include <functional>
#include <mutex>
#include <utility>

#include "worker/communicator.h"

namespace kvfold {

class WatchedCommunicator final : public Communicator {
 public:
  using OnFailure = std::function<void(const absl::Status&)>;
  // `inner` outlives this.
  explicit WatchedCommunicator(Communicator& inner) : inner_(inner) {}

  // Called once, on the thread whose collective failed first (or at once with that failure when
  // one happened before the callback was set). Must not call back into this communicator.
  void SetOnFailure(OnFailure on_failure);

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  bool accepts_device_memory() const override { return inner_.accepts_device_memory(); }
  absl::Status AllReduceSum(float* data, size_t count) override {
    return Check(inner_.AllReduceSum(data, count));
  }
  absl::Status AllGather(const float* in, size_t count, float* out) override {
    return Check(inner_.AllGather(in, count, out));
  }
  absl::Status Broadcast(float* data, size_t count, int root) override {
    return Check(inner_.Broadcast(data, count, root));
  }
  absl::Status Barrier() override { return Check(inner_.Barrier()); }

 private:
  absl::Status Check(absl::Status status);

  Communicator& inner_;
  std::mutex mu_;
  OnFailure on_failure_;   // guarded by mu_
  absl::Status failure_;   // guarded by mu_: the first one
  bool reported_ = false;  // guarded by mu_
};

}  // namespace kvfold
