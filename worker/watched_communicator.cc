#include "worker/watched_communicator.h"

namespace kvfold {

void WatchedCommunicator::SetOnFailure(OnFailure on_failure) {
  absl::Status failure;
  {
    std::lock_guard<std::mutex> lock(mu_);
    on_failure_ = std::move(on_failure);
    if (failure_.ok() || reported_ || !on_failure_) return;
    reported_ = true;
    failure = failure_;
  }
  on_failure_(failure);
}

absl::Status WatchedCommunicator::Check(absl::Status status) {
  if (status.ok()) return status;
  OnFailure report;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok()) return status;
    failure_ = status;
    if (!on_failure_) return status;
    reported_ = true;
    report = on_failure_;
  }
  report(status);
  return status;
}

}  // namespace kvfold
