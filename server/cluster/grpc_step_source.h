// A follower node's StepSource (worker/step_transport.h): its rank's Cluster.Steps stream from the
// leader (step_publisher.h). The stream opens on the first Next. A stream that ends before the
// finish marker (the leader died, left or refused) is UNAVAILABLE with the reason. The channel
// sends keepalive pings while it waits, so a leader that stops answering (a stopped process, a
// lost node) also ends the wait, within about twice the group's timeout, rather than hanging.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "kvfold/v1/internal.grpc.pb.h"
#include "worker/step_transport.h"

namespace kvfold::cluster {

class GrpcStepSource final : public StepSource {
 public:
  GrpcStepSource(const std::string& leader_address, int rank, std::chrono::seconds timeout);
  ~GrpcStepSource() override;

  absl::Status Next(StepMessage& step) override;

 private:
  absl::Status Broken();

  const std::string leader_address_;
  const int rank_;
  std::unique_ptr<kvfold::internal::v1::Cluster::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<kvfold::internal::v1::Step>> reader_;
  bool finished_ = false;
};

}  // namespace kvfold::cluster
