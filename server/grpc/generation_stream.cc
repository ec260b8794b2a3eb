#include "server/grpc/generation_stream.h"

#include <utility>

#include "glog/logging.h"
#include "server/grpc/proto_convert.h"

namespace kvfold::rpc {

namespace {

// `into` followed by `next`, as one response.
void AppendResponse(v1::GenerateResponse next, v1::GenerateResponse& into) {
  into.mutable_token_ids()->MergeFrom(next.token_ids());
  into.mutable_text()->append(next.text());
  into.mutable_logprobs()->MergeFrom(next.logprobs());
  into.mutable_prompt_logprobs()->MergeFrom(next.prompt_logprobs());
  if (next.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    into.set_finish_reason(next.finish_reason());
  }
  if (next.has_usage()) *into.mutable_usage() = next.usage();
}

}  // namespace

GenerationStream* GenerationStream::Start(serving::ServingEngine& engine,
                                          const Tokenizer& tokenizer,
                                          absl::StatusOr<serving::GenerationRequest> request) {
  auto* stream = new GenerationStream(engine, tokenizer);
  // The engine may deliver deltas (and even the last one) before Submit returns; gRPC holds
  // writes started before the reactor is bound until it is.
  absl::StatusOr<RequestId> id =
      request.ok()
          ? engine.Submit(*std::move(request),
                          [stream](serving::GenerationDelta d) { stream->OnDelta(std::move(d)); })
          : absl::StatusOr<RequestId>(request.status());
  if (!id.ok()) {
    {
      std::lock_guard<std::mutex> lock(stream->mu_);
      stream->engine_done_ = true;
      stream->finish_started_ = true;
    }
    stream->Finish(ToGrpcStatus(id.status()));
    return stream;
  }
  bool abort = false;
  {
    std::lock_guard<std::mutex> lock(stream->mu_);
    stream->id_ = *id;
    abort = stream->abort_wanted_;
  }
  if (abort) engine.Abort(*id);
  return stream;
}

void GenerationStream::OnDelta(serving::GenerationDelta delta) {
  const bool last = delta.finish_reason.has_value();
  std::optional<v1::GenerateResponse> response;
  std::optional<::grpc::Status> status;
  if (last && *delta.finish_reason == "error") {
    status = ::grpc::Status(::grpc::StatusCode::INTERNAL,
                            delta.error.empty() ? "the engine failed the request" : delta.error);
  } else if (last || !delta.token_ids.empty() || !delta.text.empty()) {
    response = ToResponse(delta, tokenizer_);
    if (last) status = ::grpc::Status::OK;
  }

  Action action;
  bool delete_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (last) engine_done_ = true;
    if (grpc_done_) {
      delete_now = last;
    } else if (!broken_ && !finish_started_) {
      if (response.has_value()) {
        // A slow reader gets fewer, larger messages: the engine's deltas pile onto the last
        // waiting response instead of queueing one each (front() may be on the wire: not that).
        if (pending_.size() >= 2) {
          AppendResponse(*std::move(response), pending_.back());
        } else {
          pending_.push_back(*std::move(response));
        }
      }
      if (status.has_value()) final_status_ = std::move(status);
      action = NextActionLocked();
    }
  }
  if (delete_now) {
    delete this;
    return;
  }
  Take(action);  // `this` may be gone after this (OnDone on another thread)
}

GenerationStream::Action GenerationStream::NextActionLocked() {
  Action action;
  if (finish_started_ || writing_) return action;
  if (broken_) {
    finish_started_ = true;
    action.step = Step::kFinish;
    action.status = ::grpc::Status::CANCELLED;
  } else if (!pending_.empty()) {
    // front() stays put until OnWriteDone pops it (deque::push_back keeps references valid).
    writing_ = true;
    action.step = Step::kWrite;
    action.message = &pending_.front();
  } else if (final_status_.has_value()) {
    finish_started_ = true;
    action.step = Step::kFinish;
    action.status = *final_status_;
  }
  return action;
}

void GenerationStream::Take(const Action& action) {
  switch (action.step) {
    case Step::kNone:
      return;
    case Step::kWrite:
      StartWrite(action.message);
      return;
    case Step::kFinish:
      Finish(action.status);
      return;
  }
}

void GenerationStream::OnWriteDone(bool ok) {
  Action action;
  bool abort = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    pending_.pop_front();
    if (!ok && !broken_) {
      broken_ = true;
      abort = true;
    }
    action = NextActionLocked();
  }
  if (abort) AbortGeneration();
  Take(action);
}

void GenerationStream::OnCancel() {
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    broken_ = true;
    action = NextActionLocked();
  }
  AbortGeneration();
  Take(action);
}

void GenerationStream::AbortGeneration() {
  std::optional<RequestId> id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (engine_done_) return;
    if (!id_.has_value()) {
      abort_wanted_ = true;
      return;
    }
    id = id_;
  }
  engine_.Abort(*id);
}

void GenerationStream::OnDone() {
  bool delete_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    grpc_done_ = true;
    delete_now = engine_done_;
  }
  if (delete_now) delete this;
}

}  // namespace kvfold::rpc
