#include "server/cluster/step_publisher.h"

#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "server/cluster/step_proto.h"

namespace kvfold::cluster {

namespace pb = kvfold::internal::v1;

StepPublisher::StepPublisher(int world_size, absl::Duration timeout)
    : timeout_(timeout), followers_(world_size > 1 ? world_size : 1) {}

absl::Status StepPublisher::BrokenError(int rank) const {
  return absl::UnavailableError(absl::StrFormat(
      "tensor-parallel follower rank %d's step stream broke (its node died or left)", rank));
}

absl::Status StepPublisher::Send(const ForwardBatch& batch, const KvCache& cache) {
  return Publish(StepMessage::Of(batch, cache));
}

absl::Status StepPublisher::Publish(const StepMessage& message) {
  auto step = std::make_shared<const pb::Step>(ToProto(message));
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout_);
  std::unique_lock<std::mutex> lock(mu_);
  for (size_t rank = 1; rank < followers_.size(); ++rank) {
    Follower& f = followers_[rank];
    const bool room = changed_.wait_until(
        lock, deadline, [&] { return closed_ || f.broken || f.queue.size() < kMaxQueued; });
    if (closed_) return absl::CancelledError("the tensor-parallel leader is shutting down");
    if (f.broken) return BrokenError(static_cast<int>(rank));
    if (!room) {
      return absl::DeadlineExceededError(
          absl::StrFormat("tensor-parallel follower rank %d read no step within %s", rank,
                          absl::FormatDuration(timeout_)));
    }
    f.queue.push_back(step);
  }
  changed_.notify_all();
  return absl::OkStatus();
}

absl::Status StepPublisher::Finish() {
  if (absl::Status s = Publish(StepMessage::Finish()); !s.ok()) return s;
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout_);
  std::unique_lock<std::mutex> lock(mu_);
  for (size_t rank = 1; rank < followers_.size(); ++rank) {
    Follower& f = followers_[rank];
    const bool done = changed_.wait_until(
        lock, deadline, [&] { return closed_ || f.broken || f.delivered_finish; });
    if (f.broken) return BrokenError(static_cast<int>(rank));
    if (!done || closed_) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "tensor-parallel follower rank %d did not read the finish marker within %s", rank,
          absl::FormatDuration(timeout_)));
    }
  }
  return absl::OkStatus();
}

void StepPublisher::SetOnFailure(std::function<void(const absl::Status&)> on_failure) {
  std::unique_lock<std::mutex> lock(mu_);
  if (failure_.ok()) {
    on_failure_ = std::move(on_failure);
    return;
  }
  const absl::Status failure = failure_;
  lock.unlock();
  on_failure(failure);
}

grpc::Status StepPublisher::Broke(int rank, std::unique_lock<std::mutex>& lock,
                                  const std::string& why) {
  followers_[rank].broken = true;
  changed_.notify_all();
  std::function<void(const absl::Status&)> report;
  absl::Status failure = BrokenError(rank);
  if (failure_.ok()) {
    failure_ = failure;
    report = std::move(on_failure_);
    on_failure_ = nullptr;
  }
  lock.unlock();
  LOG(WARNING) << failure.message() << ": " << why;
  if (report) report(failure);
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(failure.message()));
}

grpc::Status StepPublisher::Serve(int rank, grpc::ServerContext& context,
                                  grpc::ServerWriter<pb::Step>& writer) {
  std::unique_lock<std::mutex> lock(mu_);
  if (rank < 1 || rank >= static_cast<int>(followers_.size())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("rank %d is outside [1, %d)", rank, followers_.size()));
  }
  Follower& f = followers_[rank];
  if (f.attached) {
    return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                        absl::StrFormat("rank %d has a step stream already", rank));
  }
  f.attached = true;
  for (;;) {
    // Wakes now and then to notice a follower that went away while no step was due.
    changed_.wait_for(lock, std::chrono::milliseconds(100),
                      [&] { return closed_ || !f.queue.empty(); });
    if (closed_) {
      return grpc::Status(grpc::StatusCode::CANCELLED,
                          "the tensor-parallel leader is shutting down");
    }
    if (context.IsCancelled()) return Broke(rank, lock, "the call was cancelled");
    if (f.queue.empty()) continue;
    const std::shared_ptr<const pb::Step> step = f.queue.front();
    lock.unlock();
    const bool written = writer.Write(*step);
    lock.lock();
    if (!written) return Broke(rank, lock, "a write failed");
    f.queue.pop_front();
    if (step->finish()) f.delivered_finish = true;
    changed_.notify_all();
    if (f.delivered_finish) return grpc::Status::OK;
  }
}

void StepPublisher::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  changed_.notify_all();
}

}  // namespace kvfold::cluster
