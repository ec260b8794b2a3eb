// The GPU Communicator: NCCL, one rank per GPU. Built only where CUDA and NCCL are found
// (KVFOLD_HAVE_NCCL; libnccl from the CUDA toolkit or the nvidia-nccl wheel).
//
// Buffers: every pointer may be device memory (used in place) or host memory (staged through a
// device scratch buffer), decided per call with cudaPointerGetAttributes. Data on the device is
// usually written by kernels on another stream (the CUDA Ops' own): with NcclOptions::stream set to
// that producer stream, NCCL's stream waits on an event recorded there (cudaStreamWaitEvent), and
// the producer stream waits on an event recorded after the collective, so the producer's next
// kernels see the result; without it, the device is synchronised (cudaDeviceSynchronize) before a
// collective on device memory. Either way every call waits for its collective to finish.
//
// Determinism: NCCL's ncclAllReduce sums along its ring or tree, so an element's sum starts at a
// rank that depends on the element's chunk and the algorithm NCCL picks (rank count, size,
// topology, NCCL_ALGO): deterministic run to run on one machine, but not the rank-order sum the
// Communicator contract promises, and not the bits the gloo (CPU) implementation gives. By default
// AllReduceSum is therefore ncclAllGather into a [size, count] scratch followed by one kernel that
// adds the rows in rank order, ((x0 + x1) + x2) + ..., exactly as GlooCommunicator does on the CPU
// (same bits for the same inputs). It moves size() copies instead of ~2, cheap for
// tensor-parallel activations (a batch of hidden-size rows). NcclOptions::rank_order_sum = false
// uses ncclAllReduce instead (NCCL's order; faster for large buffers).
//
// Failure: the communicator is non-blocking (ncclConfig_t::blocking = 0); each call polls
// ncclCommGetAsyncError and the stream until the collective is done, and on an NCCL error or when
// the timeout runs out aborts the communicator (ncclCommAbort) and fails: DEADLINE_EXCEEDED for the
// timeout, UNAVAILABLE for NCCL errors (message from ncclGetErrorString and ncclGetLastError).
// Every later call returns FAILED_PRECONDITION carrying the first error.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/communicator.h"

namespace kvfold {

struct NcclOptions {
  int rank = 0;
  int size = 1;
  int device = 0;  // the CUDA device ordinal this rank drives
  // Bounds the bootstrap (waiting for the unique id and every rank to join) and each collective.
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
  // AllReduceSum in rank order (all-gather + ordered local sum; same bits as gloo) or NCCL's own
  // all-reduce order (see above).
  bool rank_order_sum = true;
  // The cudaStream_t (on `device`) whose work writes and reads the collectives' device buffers,
  // e.g. CudaOpsStream(ops); null: synchronise the device instead (see above). Outlives this.
  void* stream = nullptr;
  // Names this group's unique-id file in a file-store directory (CreateWithFileStore).
  std::string store_prefix = "kvfold";
};

// NCCL's ncclUniqueId as bytes (128 of them): rank 0 makes one, every rank needs it to join.
struct NcclId {
  std::string bytes;
};
absl::StatusOr<NcclId> NewNcclId();

class NcclCommunicator final : public Communicator {
 public:
  // Joins the group identified by `id` on options.device. Every rank calls this (from its own
  // process or thread) with the same id and size.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const NcclOptions& options,
                                                                  const NcclId& id);
  // Create with the id exchanged through a file in `directory` (shared by the ranks of one node):
  // rank 0 writes <directory>/<store_prefix>.nccl_id (atomically: write, then rename), the others
  // wait for it up to the timeout. The directory must be fresh for each group, as for gloo's
  // FileStore.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> CreateWithFileStore(
      const NcclOptions& options, const std::string& directory);

  ~NcclCommunicator() override;

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }
  bool accepts_device_memory() const override { return true; }
  absl::Status AllReduceSum(float* data, size_t count) override;
  absl::Status AllGather(const float* in, size_t count, float* out) override;
  absl::Status Broadcast(float* data, size_t count, int root) override;
  absl::Status Barrier() override;

  // Ends the communicator at once (ncclCommAbort) instead of with the destructor's orderly
  // ncclCommDestroy, which may wait on peers: for a group whose peer process is gone. Every later
  // call fails.
  void Abort();

 private:
  struct State;  // NCCL and CUDA handles, scratch buffers
  NcclCommunicator(const NcclOptions& options, std::unique_ptr<State> state);

  // Fails with the first error once one happened.
  absl::Status CheckUsable() const;
  // Waits for the collective just enqueued; on error or timeout aborts and records the failure.
  absl::Status Finish(const char* what);
  absl::Status Fail(absl::Status status);

  NcclOptions options_;
  std::unique_ptr<State> state_;
  absl::Status failure_;
};

}  // namespace kvfold
