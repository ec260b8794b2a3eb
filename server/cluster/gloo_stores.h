// gloo::rendezvous::Store over the leader's KeyValueStore: in process on the leader, over the
// Cluster service's StoreSet/StoreGet calls on a follower node. gloo reports store failures by
// exception; these throw std::runtime_error, whose message says "timed out" when a deadline ran
// out (GlooCommunicator turns that into DEADLINE_EXCEEDED).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gloo/rendezvous/store.h"
#include "kvfold/v1/internal.grpc.pb.h"
#include "server/cluster/key_value_store.h"

namespace kvfold::cluster {

class LocalGlooStore final : public gloo::rendezvous::Store {
 public:
  // `store` outlives this; gets and waits give up after `timeout`.
  LocalGlooStore(KeyValueStore& store, std::chrono::milliseconds timeout)
      : store_(store), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  KeyValueStore& store_;
  std::chrono::milliseconds timeout_;
};

class GrpcGlooStore final : public gloo::rendezvous::Store {
 public:
  GrpcGlooStore(std::unique_ptr<kvfold::internal::v1::Cluster::Stub> stub,
                std::chrono::milliseconds timeout)
      : stub_(std::move(stub)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  std::vector<std::string> Get(const std::vector<std::string>& keys,
                               std::chrono::milliseconds timeout);

  std::unique_ptr<kvfold::internal::v1::Cluster::Stub> stub_;
  std::chrono::milliseconds timeout_;
};

}  // namespace kvfold::cluster
