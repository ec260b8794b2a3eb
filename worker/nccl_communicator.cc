#include "worker/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "worker/nccl_ordered_sum.h"

namespace kvfold {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status CudaError(const char* what, cudaError_t e) {
  return absl::UnavailableError(
      absl::StrCat("nccl communicator: ", what, ": ", cudaGetErrorString(e)));
}

absl::Status NcclError(const char* what, ncclResult_t r, ncclComm_t comm) {
  std::string message = absl::StrCat("nccl ", what, ": ", ncclGetErrorString(r));
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') absl::StrAppend(&message, " (", last, ")");
  return absl::UnavailableError(message);
}

// A grow-only device buffer for staging host data and the all-gather of AllReduceSum.
class Scratch {
 public:
  ~Scratch() {
    if (data_ != nullptr) cudaFree(data_);
  }
  absl::StatusOr<float*> Reserve(size_t floats) {
    if (floats <= capacity_) return data_;
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    capacity_ = 0;
    if (cudaError_t e = cudaMalloc(&data_, floats * sizeof(float)); e != cudaSuccess) {
      return CudaError("cudaMalloc scratch", e);
    }
    capacity_ = floats;
    return data_;
  }

 private:
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

bool IsDevicePointer(const void* p) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    (void)cudaGetLastError();  // an unknown pointer is host memory
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  // NcclOptions::stream and the events that order NCCL's stream after it and it after NCCL's.
  cudaStream_t producer = nullptr;
  cudaEvent_t produced = nullptr;
  cudaEvent_t consumed = nullptr;
  bool aborted = false;
  ~State() {
    if (produced != nullptr) cudaEventDestroy(produced);
    if (consumed != nullptr) cudaEventDestroy(consumed);
  }
  Scratch in, out, gathered;
};

absl::StatusOr<NcclId> NewNcclId() {
  ncclUniqueId id;
  if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
    return absl::UnavailableError(absl::StrCat("ncclGetUniqueId: ", ncclGetErrorString(r)));
  }
  return NcclId{std::string(id.internal, sizeof(id.internal))};
}

NcclCommunicator::NcclCommunicator(const NcclOptions& options, std::unique_ptr<State> state)
    : options_(options), state_(std::move(state)) {}

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(options_.device);
  if (state_->comm != nullptr && !state_->aborted) {
    // Destroy after a finished collective is safe; abort if something is still in flight.
    if (cudaStreamQuery(state_->stream) == cudaSuccess) {
      ncclCommDestroy(state_->comm);
    } else {
      ncclCommAbort(state_->comm);
    }
  }
  if (state_->stream != nullptr) cudaStreamDestroy(state_->stream);
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    const NcclOptions& options, const NcclId& id) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl: rank ", options.rank, " is not in a group of ", options.size));
  }
  if (options.timeout <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError("nccl: the timeout must be positive");
  }
  ncclUniqueId unique_id;
  if (id.bytes.size() != sizeof(unique_id.internal)) {
    return absl::InvalidArgumentError(absl::StrCat("nccl: the unique id has ", id.bytes.size(),
                                                   " bytes, want ", sizeof(unique_id.internal)));
  }
  std::memcpy(unique_id.internal, id.bytes.data(), sizeof(unique_id.internal));
  if (cudaError_t e = cudaSetDevice(options.device); e != cudaSuccess) {
    return CudaError("cudaSetDevice", e);
  }
  auto state = std::make_unique<State>();
  if (cudaError_t e = cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking);
      e != cudaSuccess) {
    return CudaError("cudaStreamCreate", e);
  }
  if (options.stream != nullptr) {
    state->producer = static_cast<cudaStream_t>(options.stream);
    for (cudaEvent_t* event : {&state->produced, &state->consumed}) {
      if (cudaError_t e = cudaEventCreateWithFlags(event, cudaEventDisableTiming);
          e != cudaSuccess) {
        cudaStreamDestroy(state->stream);
        return CudaError("cudaEventCreate", e);
      }
    }
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // calls return at once; Finish polls, so a dead peer is a timeout
  ncclResult_t r =
      ncclCommInitRankConfig(&state->comm, options.size, unique_id, options.rank, &config);
  const Clock::time_point deadline = Clock::now() + options.timeout;
  while (r == ncclInProgress) {
    if (Clock::now() > deadline) {
      ncclCommAbort(state->comm);
      state->aborted = true;
      cudaStreamDestroy(state->stream);
      state->stream = nullptr;
      return absl::DeadlineExceededError(absl::StrCat(
          "nccl: rank ", options.rank, " of ", options.size, " timed out waiting for the group"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
    ncclCommGetAsyncError(state->comm, &r);
  }
  if (r != ncclSuccess) {
    absl::Status status = NcclError("ncclCommInitRankConfig", r, state->comm);
    if (state->comm != nullptr) ncclCommAbort(state->comm);
    state->aborted = true;
    return status;
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(options, std::move(state)));
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::CreateWithFileStore(
    const NcclOptions& options, const std::string& directory) {
  namespace fs = std::filesystem;
  const fs::path path = fs::path(directory) / (options.store_prefix + ".nccl_id");
  NcclId id;
  if (options.rank == 0) {
    absl::StatusOr<NcclId> made = NewNcclId();
    if (!made.ok()) return made.status();
    id = *std::move(made);
    const fs::path tmp = path.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary);
      out.write(id.bytes.data(), static_cast<std::streamsize>(id.bytes.size()));
      if (!out) return absl::UnavailableError(absl::StrCat("nccl: cannot write ", tmp.string()));
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec)
      return absl::UnavailableError(
          absl::StrCat("nccl: rename to ", path.string(), ": ", ec.message()));
  } else {
    const Clock::time_point deadline = Clock::now() + options.timeout;
    while (!fs::exists(path)) {
      if (Clock::now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("nccl: rank ", options.rank, " timed out waiting for ", path.string()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::ifstream in(path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    id.bytes = bytes.str();
  }
  return Create(options, id);
}

void NcclCommunicator::Abort() {
  if (state_->comm == nullptr || state_->aborted) return;
  cudaSetDevice(options_.device);
  ncclCommAbort(state_->comm);
  state_->aborted = true;
  if (failure_.ok()) failure_ = absl::CancelledError("nccl communicator aborted");
}

absl::Status NcclCommunicator::CheckUsable() const {
  if (failure_.ok()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("nccl communicator unusable after an earlier failure: ", failure_.ToString()));
}

absl::Status NcclCommunicator::Fail(absl::Status status) {
  if (failure_.ok()) failure_ = status;
  return status;
}

absl::Status NcclCommunicator::Finish(const char* what) {
  const Clock::time_point deadline = Clock::now() + options_.timeout;
  while (true) {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(state_->comm, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      absl::Status status = NcclError(what, async, state_->comm);
      ncclCommAbort(state_->comm);
      state_->aborted = true;
      return Fail(status);
    }
    const cudaError_t e = cudaStreamQuery(state_->stream);
    if (e == cudaSuccess && async == ncclSuccess) return absl::OkStatus();
    if (e != cudaSuccess && e != cudaErrorNotReady) {
      ncclCommAbort(state_->comm);
      state_->aborted = true;
      return Fail(CudaError(what, e));
    }
    if (Clock::now() > deadline) {
      ncclCommAbort(state_->comm);
      state_->aborted = true;
      return Fail(absl::DeadlineExceededError(absl::StrCat(
          "nccl ", what, ": rank ", options_.rank, " timed out after ", options_.timeout.count(),
          " ms (a peer died or stopped calling collectives)")));
    }
    std::this_thread::yield();
  }
}

namespace {

// Orders NCCL's `stream` after the work queued so far on `producer` (through `produced`), or
// without a producer after all work on the device, before a collective on device memory.
absl::Status AfterProducer(cudaStream_t producer, cudaEvent_t produced, cudaStream_t stream) {
  if (producer == nullptr) {
    if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
      return CudaError("cudaDeviceSynchronize", e);
    }
    return absl::OkStatus();
  }
  if (cudaError_t e = cudaEventRecord(produced, producer); e != cudaSuccess) {
    return CudaError("cudaEventRecord on the producer stream", e);
  }
  if (cudaError_t e = cudaStreamWaitEvent(stream, produced, 0); e != cudaSuccess) {
    return CudaError("cudaStreamWaitEvent", e);
  }
  return absl::OkStatus();
}

// Orders the producer's later work after everything queued on NCCL's `stream` (a no-op without a
// producer: the caller already waited for the collective, and the device was synchronised).
absl::Status BeforeConsumer(cudaStream_t producer, cudaEvent_t consumed, cudaStream_t stream) {
  if (producer == nullptr) return absl::OkStatus();
  if (cudaError_t e = cudaEventRecord(consumed, stream); e != cudaSuccess) {
    return CudaError("cudaEventRecord on the nccl stream", e);
  }
  if (cudaError_t e = cudaStreamWaitEvent(producer, consumed, 0); e != cudaSuccess) {
    return CudaError("cudaStreamWaitEvent on the producer stream", e);
  }
  return absl::OkStatus();
}

// Where a collective reads or writes `floats` floats at `p`: p itself when it is device memory
// (NCCL's stream ordered after `producer` first: AfterProducer), else `scratch` (filled from p
// first when `upload`).
absl::StatusOr<float*> OnDevice(const float* p, size_t floats, bool upload, Scratch& scratch,
                                cudaStream_t stream, cudaStream_t producer, cudaEvent_t produced) {
  if (IsDevicePointer(p)) {
    if (absl::Status s = AfterProducer(producer, produced, stream); !s.ok()) return s;
    return const_cast<float*>(p);
  }
  absl::StatusOr<float*> d = scratch.Reserve(floats);
  if (!d.ok() || !upload) return d;
  if (cudaError_t e =
          cudaMemcpyAsync(*d, p, floats * sizeof(float), cudaMemcpyHostToDevice, stream);
      e != cudaSuccess) {
    return CudaError("cudaMemcpyAsync to device", e);
  }
  return d;
}

// Copies the result back to host memory `p` when the collective ran on scratch `d`.
absl::Status Download(float* p, const float* d, size_t floats, cudaStream_t stream) {
  if (p == d) return absl::OkStatus();
  if (cudaError_t e = cudaMemcpyAsync(p, d, floats * sizeof(float), cudaMemcpyDeviceToHost, stream);
      e != cudaSuccess) {
    return CudaError("cudaMemcpyAsync to host", e);
  }
  if (cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
    return CudaError("cudaStreamSynchronize", e);
  }
  return absl::OkStatus();
}

}  // namespace

// The KVFOLD_* macros of status_macros.h would return without recording the failure; these do.
#define KVFOLD_NCCL_TRY(expr)                                     \
  do {                                                            \
    if (absl::Status kvfold_nccl_s = (expr); !kvfold_nccl_s.ok()) \
      return Fail(std::move(kvfold_nccl_s));                      \
  } while (0)
#define KVFOLD_NCCL_ENQUEUE(what, call)                                          \
  do {                                                                           \
    const ncclResult_t kvfold_nccl_r = (call);                                   \
    if (kvfold_nccl_r != ncclSuccess && kvfold_nccl_r != ncclInProgress) {       \
      absl::Status kvfold_nccl_s = NcclError(what, kvfold_nccl_r, state_->comm); \
      ncclCommAbort(state_->comm);                                               \
      state_->aborted = true;                                                    \
      return Fail(std::move(kvfold_nccl_s));                                     \
    }                                                                            \
  } while (0)

absl::Status NcclCommunicator::AllReduceSum(float* data, size_t count) {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (count == 0) return absl::OkStatus();
  cudaSetDevice(options_.device);
  absl::StatusOr<float*> d = OnDevice(data, count, /*upload=*/true, state_->in, state_->stream,
                                      state_->producer, state_->produced);
  KVFOLD_NCCL_TRY(d.status());
  if (options_.rank_order_sum) {
    absl::StatusOr<float*> gathered = state_->gathered.Reserve(count * options_.size);
    KVFOLD_NCCL_TRY(gathered.status());
    KVFOLD_NCCL_ENQUEUE("ncclAllGather", ncclAllGather(*d, *gathered, count, ncclFloat,
                                                       state_->comm, state_->stream));
    KVFOLD_NCCL_TRY(Finish("AllReduceSum (all-gather)"));
    if (cudaError_t e = LaunchRankOrderSum(*gathered, options_.size, count, *d, state_->stream);
        e != cudaSuccess) {
      return Fail(CudaError("rank-order sum", e));
    }
  } else {
    KVFOLD_NCCL_ENQUEUE("ncclAllReduce", ncclAllReduce(*d, *d, count, ncclFloat, ncclSum,
                                                       state_->comm, state_->stream));
  }
  KVFOLD_NCCL_TRY(Finish("AllReduceSum"));
  KVFOLD_NCCL_TRY(BeforeConsumer(state_->producer, state_->consumed, state_->stream));
  KVFOLD_NCCL_TRY(Download(data, *d, count, state_->stream));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllGather(const float* in, size_t count, float* out) {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (count == 0) return absl::OkStatus();
  cudaSetDevice(options_.device);
  absl::StatusOr<float*> d_in = OnDevice(in, count, /*upload=*/true, state_->in, state_->stream,
                                         state_->producer, state_->produced);
  KVFOLD_NCCL_TRY(d_in.status());
  absl::StatusOr<float*> d_out = OnDevice(out, count * options_.size, /*upload=*/false, state_->out,
                                          state_->stream, state_->producer, state_->produced);
  KVFOLD_NCCL_TRY(d_out.status());
  KVFOLD_NCCL_ENQUEUE("ncclAllGather",
                      ncclAllGather(*d_in, *d_out, count, ncclFloat, state_->comm, state_->stream));
  KVFOLD_NCCL_TRY(Finish("AllGather"));
  KVFOLD_NCCL_TRY(BeforeConsumer(state_->producer, state_->consumed, state_->stream));
  KVFOLD_NCCL_TRY(Download(out, *d_out, count * options_.size, state_->stream));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Broadcast(float* data, size_t count, int root) {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (root < 0 || root >= options_.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl Broadcast: root ", root, " is not in a group of ", options_.size));
  }
  if (count == 0) return absl::OkStatus();
  cudaSetDevice(options_.device);
  absl::StatusOr<float*> d = OnDevice(data, count, /*upload=*/options_.rank == root, state_->in,
                                      state_->stream, state_->producer, state_->produced);
  KVFOLD_NCCL_TRY(d.status());
  KVFOLD_NCCL_ENQUEUE("ncclBroadcast",
                      ncclBroadcast(*d, *d, count, ncclFloat, root, state_->comm, state_->stream));
  KVFOLD_NCCL_TRY(Finish("Broadcast"));
  KVFOLD_NCCL_TRY(BeforeConsumer(state_->producer, state_->consumed, state_->stream));
  KVFOLD_NCCL_TRY(Download(data, *d, count, state_->stream));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Barrier() {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  cudaSetDevice(options_.device);
  // A one-float all-reduce completes on no rank before every rank has joined it.
  absl::StatusOr<float*> d = state_->in.Reserve(1);
  KVFOLD_NCCL_TRY(d.status());
  KVFOLD_NCCL_ENQUEUE("ncclAllReduce (barrier)",
                      ncclAllReduce(*d, *d, 1, ncclFloat, ncclSum, state_->comm, state_->stream));
  return Finish("Barrier");
}

}  // namespace kvfold
