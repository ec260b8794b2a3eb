// The CPU Communicator: gloo (Debian's libgloo-dev) over its TCP transport. Ranks find each other
// through a gloo rendezvous store: a FileStore in a shared directory for processes on one node,
// or any other gloo::rendezvous::Store (one bootstrapped over the leader's gRPC channel for
// several nodes) passed to Create.
//
// AllReduceSum is an all-gather followed by a local sum in rank order, not gloo's ring or
// halving-doubling all-reduce. Those are deterministic too (each element's reduction chain is
// fixed by the algorithm, the rank count and the element's segment, never by timing), but the
// chain starts at a different rank for different segments, so an element's sum is not the
// rank-order sum and changes with the segmenting. Tensor-parallel all-reduces are small (a batch
// of hidden-size rows per layer), so receiving size() copies instead of ~2 costs little and buys
// one fixed, documented order that any other backend or a single-process reference can repeat.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/communicator.h"

namespace gloo {
class Context;
namespace rendezvous {
class Store;
}  // namespace rendezvous
}  // namespace gloo

namespace kvfold {

// How many collectives of one kind ran and the wall time they took on this rank (waiting for the
// slowest peer included), for the tensor-parallel benchmark.
struct CollectiveStats {
  int64_t calls = 0;
  double seconds = 0;
};
struct CommunicatorStats {
  CollectiveStats all_reduce, all_gather, broadcast, barrier;
};

struct GlooOptions {
  int rank = 0;
  int size = 1;
  // Where this rank listens for its peers: a hostname or address ("127.0.0.1" on one node) or,
  // when `network_interface` is set, that interface's address ("eth0").
  std::string hostname = "127.0.0.1";
  std::string network_interface;
  // Bounds the rendezvous (waiting for every rank to join) and each collective: a dead or
  // silent peer turns into an error after at most this long.
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
  // Namespaces this group's keys in the store, so one store can serve several groups.
  std::string store_prefix = "kvfold";
};

class GlooCommunicator final : public Communicator {
 public:
  // Joins the group: publishes this rank's address in `store`, waits for every other rank's and
  // connects to each. Fails with DEADLINE_EXCEEDED when a rank does not join within the timeout.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(
      const GlooOptions& options, std::shared_ptr<gloo::rendezvous::Store> store);

  // Create with a FileStore in `directory` (shared by the ranks of one node). The directory must
  // be fresh for each group (or each group needs its own store_prefix): stale keys from an
  // earlier run would be read as this run's addresses.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> CreateWithFileStore(
      const GlooOptions& options, const std::string& directory);

  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(float* data, size_t count) override;
  absl::Status AllGather(const float* in, size_t count, float* out) override;
  absl::Status Broadcast(float* data, size_t count, int root) override;
  absl::Status Barrier() override;
  // The collectives so far. Read it on the thread that runs them (or once they have stopped).
  CommunicatorStats stats() const { return stats_; }

 private:
  GlooCommunicator(int rank, int size, std::shared_ptr<gloo::rendezvous::Store> store,
                   std::shared_ptr<gloo::Context> context);

  // Runs one gloo collective, turning its exceptions into a Status and remembering the first
  // failure (the context is unusable after one).
  template <typename Fn>
  absl::Status Run(const char* what, Fn&& fn);
  // AllGather without the counting (AllReduceSum counts as one all-reduce).
  absl::Status Gather(const float* in, size_t count, float* out);
  // A fresh tag per collective: every rank issues the same sequence, so tags match across ranks
  // and a rank that got out of step times out instead of exchanging the wrong buffers.
  uint32_t NextTag() { return next_tag_++; }

  int rank_;
  int size_;
  std::shared_ptr<gloo::rendezvous::Store> store_;
  std::shared_ptr<gloo::Context> context_;
  uint32_t next_tag_ = 0;
  absl::Status failure_;
  std::vector<float> gathered_;  // AllReduceSum's all-gather buffer, reused across calls
  CommunicatorStats stats_;
};

}  // namespace kvfold
