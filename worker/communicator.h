// The collectives tensor-parallel ranks use to exchange activations: one interface, implemented
// by gloo on CPU (worker/gloo_communicator.h) and by NCCL on GPUs.
#pragma once

#include <cstddef>

#include "absl/status/status.h"

namespace kvfold {

// A fixed group of `size()` ranks. Every rank calls the same collectives in the same order with
// the same counts (and root); a call returns once this rank's part is done. Calls on one
// communicator are not thread-safe: one collective at a time.
//
// Determinism: AllReduceSum adds the ranks' values in rank order, ((x0 + x1) + x2) + ..., for
// every element, on every rank, whatever the timing, so tensor-parallel results are bit-for-bit
// reproducible and every rank holds the same bits.
//
// Failure: a peer that dies, never joins or stops answering makes the call fail within the
// communicator's timeout (DEADLINE_EXCEEDED when it ran out, UNAVAILABLE when a connection
// broke), never hang. After a failure the communicator is unusable; every later call returns
// FAILED_PRECONDITION carrying the first error.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Whether the collectives take device (GPU) pointers in place; host memory only when false.
  virtual bool accepts_device_memory() const { return false; }

  // data[0, count) becomes the element-wise sum over ranks, in rank order (see above).
  virtual absl::Status AllReduceSum(float* data, size_t count) = 0;

  // out[r * count, (r + 1) * count) receives rank r's in[0, count); out holds size() * count.
  virtual absl::Status AllGather(const float* in, size_t count, float* out) = 0;

  // Every rank's data[0, count) becomes root's.
  virtual absl::Status Broadcast(float* data, size_t count, int root) = 0;

  // Returns once every rank has entered the barrier.
  virtual absl::Status Barrier() = 0;
};

}  // namespace kvfold
