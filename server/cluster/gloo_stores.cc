#include "server/cluster/gloo_stores.h"

#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace kvfold::cluster {
namespace {

absl::Duration ToDuration(std::chrono::milliseconds ms) { return absl::Milliseconds(ms.count()); }

[[noreturn]] void Throw(const absl::Status& s) {
  throw std::runtime_error(absl::StrCat("rendezvous store: ", s.message()));
}

}  // namespace

void LocalGlooStore::set(const std::string& key, const std::vector<char>& data) {
  store_.Set(key, std::string(data.begin(), data.end()));
}

std::vector<char> LocalGlooStore::get(const std::string& key) {
  absl::StatusOr<std::vector<std::string>> values = store_.Get({key}, ToDuration(timeout_));
  if (!values.ok()) Throw(values.status());
  return std::vector<char>(values->front().begin(), values->front().end());
}

void LocalGlooStore::wait(const std::vector<std::string>& keys,
                          const std::chrono::milliseconds& timeout) {
  absl::StatusOr<std::vector<std::string>> values = store_.Get(keys, ToDuration(timeout));
  if (!values.ok()) Throw(values.status());
}

void GrpcGlooStore::set(const std::string& key, const std::vector<char>& data) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  kvfold::internal::v1::StoreSetRequest request;
  request.set_key(key);
  request.set_value(std::string(data.begin(), data.end()));
  kvfold::internal::v1::StoreSetResponse response;
  const grpc::Status s = stub_->StoreSet(&context, request, &response);
  if (!s.ok()) {
    throw std::runtime_error(
        absl::StrCat("rendezvous store: setting '", key, "' on the leader: ", s.error_message(),
                     s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? " (timed out)" : ""));
  }
}

std::vector<std::string> GrpcGlooStore::Get(const std::vector<std::string>& keys,
                                            std::chrono::milliseconds timeout) {
  grpc::ClientContext context;
  // The leader waits up to `timeout` for the keys; the call itself gets a little longer.
  context.set_deadline(std::chrono::system_clock::now() + timeout + std::chrono::seconds(5));
  kvfold::internal::v1::StoreGetRequest request;
  for (const std::string& key : keys) request.add_keys(key);
  request.set_timeout_ms(timeout.count());
  kvfold::internal::v1::StoreGetResponse response;
  const grpc::Status s = stub_->StoreGet(&context, request, &response);
  if (!s.ok()) {
    throw std::runtime_error(
        absl::StrCat("rendezvous store: reading keys from the leader: ", s.error_message(),
                     s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? " (timed out)" : ""));
  }
  if (response.values_size() != static_cast<int>(keys.size())) {
    throw std::runtime_error("rendezvous store: the leader answered the wrong number of values");
  }
  return std::vector<std::string>(response.values().begin(), response.values().end());
}

std::vector<char> GrpcGlooStore::get(const std::string& key) {
  const std::string value = Get({key}, timeout_).front();
  return std::vector<char>(value.begin(), value.end());
}

void GrpcGlooStore::wait(const std::vector<std::string>& keys,
                         const std::chrono::milliseconds& timeout) {
  Get(keys, timeout);
}

}  // namespace kvfold::cluster
