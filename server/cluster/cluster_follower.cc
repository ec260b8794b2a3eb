#include "server/cluster/cluster_follower.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "kvfold/v1/internal.grpc.pb.h"
#include "server/cluster/gloo_stores.h"
#include "server/cluster/grpc_step_source.h"

namespace kvfold::cluster {

namespace pb = kvfold::internal::v1;

absl::StatusOr<Membership> JoinCluster(const std::string& leader_address, int node_rank,
                                       const GroupShape& shape, absl::Duration timeout) {
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(leader_address, grpc::InsecureChannelCredentials());
  std::unique_ptr<pb::Cluster::Stub> stub = pb::Cluster::NewStub(channel);
  grpc::ClientContext context;
  // The leader may still be starting: wait for it, within the timeout.
  context.set_wait_for_ready(true);
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  pb::JoinRequest request;
  request.set_node_rank(node_rank);
  request.set_nnodes(shape.nnodes);
  request.set_tensor_parallel_size(shape.tensor_parallel_size);
  request.set_model_fingerprint(shape.model_fingerprint);
  request.set_attention_plan_id(shape.attention_plan_id);
  pb::JoinResponse response;
  const grpc::Status s = stub->Join(&context, request, &response);
  if (!s.ok()) {
    const std::string why =
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED
            ? absl::StrCat("no tensor-parallel leader answered on ", leader_address, " within ",
                           absl::FormatDuration(timeout))
            : absl::StrCat("the tensor-parallel leader on ", leader_address, " refused node rank ",
                           node_rank, ": ", s.error_message());
    return s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED
               ? absl::DeadlineExceededError(why)
               : absl::FailedPreconditionError(why);
  }
  Membership m;
  m.rank = response.rank();
  m.world_size = response.world_size();
  m.store_prefix = response.store_prefix();
  m.timeout_seconds = response.timeout_seconds();
  m.store = std::make_shared<GrpcGlooStore>(pb::Cluster::NewStub(channel),
                                            std::chrono::seconds(m.timeout_seconds));
  m.steps = std::make_shared<GrpcStepSource>(leader_address, m.rank,
                                             std::chrono::seconds(m.timeout_seconds));
  return m;
}

}  // namespace kvfold::cluster
