// The rendezvous store of a multi-node tensor-parallel group: an in-memory map on the leader that
// followers reach over gRPC (cluster_leader.h) and gloo reads through gloo_stores.h.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvfold::cluster {

// Thread-safe. Keys are write-once: setting a key again replaces its value (gloo never does).
class KeyValueStore {
 public:
  void Set(const std::string& key, std::string value);
  // Waits until every key is set, then returns their values in order; DEADLINE_EXCEEDED when
  // `timeout` runs out first.
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               absl::Duration timeout);

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  absl::flat_hash_map<std::string, std::string> values_;  // guarded by mu_
};

}  // namespace kvfold::cluster
