#include "server/cluster/grpc_step_source.h"

#include "absl/strings/str_cat.h"
#include "server/cluster/step_proto.h"

namespace kvfold::cluster {

namespace pb = kvfold::internal::v1;

GrpcStepSource::GrpcStepSource(const std::string& leader_address, int rank,
                               std::chrono::seconds timeout)
    : leader_address_(leader_address), rank_(rank) {
  grpc::ChannelArguments args;
  const int ms = static_cast<int>(std::chrono::milliseconds(timeout).count());
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // an idle leader is still pinged
  stub_ = pb::Cluster::NewStub(
      grpc::CreateCustomChannel(leader_address, grpc::InsecureChannelCredentials(), args));
}

GrpcStepSource::~GrpcStepSource() {
  // A follower that leaves early (its forward failed) cancels rather than waits for the stream.
  if (reader_ != nullptr && !finished_) context_.TryCancel();
}

absl::Status GrpcStepSource::Broken() {
  const grpc::Status s = reader_->Finish();
  finished_ = true;
  return absl::UnavailableError(
      absl::StrCat("the tensor-parallel leader's step stream (", leader_address_, ", rank ", rank_,
                   ") ended before its finish marker (the leader died or left): ",
                   s.ok() ? std::string("no error given") : s.error_message()));
}

absl::Status GrpcStepSource::Next(StepMessage& step) {
  if (finished_) return absl::FailedPreconditionError("the step stream has finished");
  if (reader_ == nullptr) {
    pb::StepsRequest request;
    request.set_rank(rank_);
    reader_ = stub_->Steps(&context_, request);
  }
  pb::Step p;
  if (!reader_->Read(&p)) return Broken();
  step = FromProto(p);
  if (step.finish) {
    // The leader ends the call right after the marker: read its OK so the call closes cleanly.
    while (reader_->Read(&p)) {
    }
    const grpc::Status s = reader_->Finish();
    finished_ = true;
    if (!s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("the tensor-parallel leader's step stream failed after its finish marker: ",
                       s.error_message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvfold::cluster
