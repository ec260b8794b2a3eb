// StepMessage (worker/step_transport.h) <-> kvfold.internal.v1.Step, the multi-node step on the
// wire.
#pragma once

#include "kvfold/v1/internal.pb.h"
#include "worker/step_transport.h"

namespace kvfold::cluster {

kvfold::internal::v1::Step ToProto(const StepMessage& m);
StepMessage FromProto(const kvfold::internal::v1::Step& p);

}  // namespace kvfold::cluster
