// One Generate or Chat call: a gRPC callback-API write reactor fed by the serving engine, so a
// stream holds no thread while it waits for tokens. The engine thread queues deltas; at most one
// write is in flight, the next starts when it completes (deltas that arrive meanwhile are merged
// into one response). Cancellation (client cancel, disconnect, deadline, server shutdown) aborts
// the generation, which frees its KV blocks.
#pragma once

#include <deque>
#include <mutex>
#include <optional>

#include "absl/status/statusor.h"
#include "grpcpp/support/server_callback.h"
#include "kvfold/v1/kvfold.pb.h"
#include "server/serving/serving_engine.h"
#include "server/tokenizer/tokenizer.h"

namespace kvfold::rpc {

class GenerationStream final : public ::grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  // Submits `request` to `engine`, or finishes the call at once with its error (or the engine's
  // refusal). The reactor deletes itself once gRPC is done with it and the engine has sent the
  // last delta. `engine` and `tokenizer` must outlive it.
  static GenerationStream* Start(serving::ServingEngine& engine, const Tokenizer& tokenizer,
                                 absl::StatusOr<serving::GenerationRequest> request);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  enum class Step { kNone, kWrite, kFinish };
  // What to start once mu_ is released; read under mu_ so the engine thread's pushes cannot race.
  struct Action {
    Step step = Step::kNone;
    const v1::GenerateResponse* message = nullptr;  // kWrite
    ::grpc::Status status;                          // kFinish
  };

  GenerationStream(serving::ServingEngine& engine, const Tokenizer& tokenizer)
      : engine_(engine), tokenizer_(tokenizer) {}
  // Engine thread.
  void OnDelta(serving::GenerationDelta delta);
  // What to start next given the state; marks it started. Under mu_.
  Action NextActionLocked();
  // Starts `action` (never under mu_: gRPC may run a reaction inline).
  void Take(const Action& action);
  // Aborts the generation once it is submitted (now, or when Submit returns).
  void AbortGeneration();

  serving::ServingEngine& engine_;
  const Tokenizer& tokenizer_;

  std::mutex mu_;
  std::deque<v1::GenerateResponse> pending_;  // front() is being written while writing_
  bool writing_ = false;
  std::optional<::grpc::Status> final_status_;  // set: finish once pending_ is written
  bool broken_ = false;  // cancelled or a write failed: finish without writing more
  bool finish_started_ = false;
  bool grpc_done_ = false;    // OnDone ran
  bool engine_done_ = false;  // the last delta arrived, or nothing was submitted
  std::optional<RequestId> id_;
  bool abort_wanted_ = false;  // cancelled before Submit returned
};

}  // namespace kvfold::rpc
