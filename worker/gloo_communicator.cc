#include "worker/gloo_communicator.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gloo/allgather.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/file_store.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/rendezvous/store.h"
#include "gloo/transport/tcp/device.h"

namespace kvfold {
namespace {

// gloo reports every failure by exception; its messages say "Timed out ..." or "... timeout ..."
// when a deadline ran out and name the broken connection otherwise.
absl::Status StatusFromException(const char* what, const std::exception& e) {
  const std::string message = absl::StrCat("gloo ", what, ": ", e.what());
  const std::string lower = absl::AsciiStrToLower(e.what());
  if (absl::StrContains(lower, "timed out") || absl::StrContains(lower, "timeout")) {
    return absl::DeadlineExceededError(message);
  }
  return absl::UnavailableError(message);
}

// Adds the wall time from construction to destruction to `stats`, and one call.
class Timed {
 public:
  explicit Timed(CollectiveStats& stats)
      : stats_(stats), start_(std::chrono::steady_clock::now()) {}
  ~Timed() {
    ++stats_.calls;
    stats_.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  CollectiveStats& stats_;
  std::chrono::steady_clock::time_point start_;
};

// gloo writes to its sockets with writev, which raises SIGPIPE when a peer has gone; the broken
// connection must become an error on this rank, not kill the process.
void IgnoreSigpipe() {
  static std::once_flag once;
  std::call_once(once, [] { signal(SIGPIPE, SIG_IGN); });
}

}  // namespace

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    const GlooOptions& options, std::shared_ptr<gloo::rendezvous::Store> store) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo: rank ", options.rank, " is not in a group of ", options.size));
  }
  if (store == nullptr) return absl::InvalidArgumentError("gloo: no rendezvous store");
  if (options.timeout <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError("gloo: the timeout must be positive");
  }
  IgnoreSigpipe();
  try {
    gloo::transport::tcp::attr attr;
    if (options.network_interface.empty()) {
      attr.hostname = options.hostname;
    } else {
      attr.iface = options.network_interface;
    }
    std::shared_ptr<gloo::transport::Device> device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.size);
    context->setTimeout(options.timeout);
    gloo::rendezvous::PrefixStore prefixed(options.store_prefix, *store);
    context->connectFullMesh(prefixed, device);
    return std::unique_ptr<GlooCommunicator>(
        new GlooCommunicator(options.rank, options.size, std::move(store), std::move(context)));
  } catch (const std::exception& e) {
    return StatusFromException(
        absl::StrCat("rendezvous of rank ", options.rank, " of ", options.size).c_str(), e);
  }
}

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::CreateWithFileStore(
    const GlooOptions& options, const std::string& directory) {
  std::shared_ptr<gloo::rendezvous::Store> store;
  try {
    store = std::make_shared<gloo::rendezvous::FileStore>(directory);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo: no file store in ", directory, ": ", e.what()));
  }
  return Create(options, std::move(store));
}

GlooCommunicator::GlooCommunicator(int rank, int size,
                                   std::shared_ptr<gloo::rendezvous::Store> store,
                                   std::shared_ptr<gloo::Context> context)
    : rank_(rank), size_(size), store_(std::move(store)), context_(std::move(context)) {}

GlooCommunicator::~GlooCommunicator() = default;

template <typename Fn>
absl::Status GlooCommunicator::Run(const char* what, Fn&& fn) {
  if (!failure_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("gloo ", what, ": the communicator failed earlier: ", failure_.message()));
  }
  try {
    fn();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    failure_ = StatusFromException(what, e);
    return failure_;
  }
}

absl::Status GlooCommunicator::AllGather(const float* in, size_t count, float* out) {
  Timed timed(stats_.all_gather);
  return Gather(in, count, out);
}

absl::Status GlooCommunicator::Gather(const float* in, size_t count, float* out) {
  if (count == 0) return absl::OkStatus();
  if (size_ == 1) {
    std::memmove(out, in, count * sizeof(float));
    return absl::OkStatus();
  }
  return Run("all-gather", [&] {
    gloo::AllgatherOptions opts(context_);
    // gloo's input buffer is not written; its API takes a mutable pointer.
    opts.setInput(const_cast<float*>(in), count);
    opts.setOutput(out, count * size_);
    opts.setTag(NextTag());
    gloo::allgather(opts);
  });
}

absl::Status GlooCommunicator::AllReduceSum(float* data, size_t count) {
  if (count == 0 || size_ == 1) return absl::OkStatus();
  Timed timed(stats_.all_reduce);
  gathered_.resize(count * size_);
  absl::Status status = Gather(data, count, gathered_.data());
  if (!status.ok()) return status;
  // Rank order, element by element: ((x0 + x1) + x2) + ...
  std::copy(gathered_.begin(), gathered_.begin() + count, data);
  for (int r = 1; r < size_; ++r) {
    const float* part = gathered_.data() + r * count;
    for (size_t i = 0; i < count; ++i) data[i] += part[i];
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::Broadcast(float* data, size_t count, int root) {
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo broadcast: root ", root, " is not in a group of ", size_));
  }
  if (count == 0 || size_ == 1) return absl::OkStatus();
  Timed timed(stats_.broadcast);
  return Run("broadcast", [&] {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(data, count);  // root sends from it, the others receive into it
    opts.setRoot(root);
    opts.setTag(NextTag());
    gloo::broadcast(opts);
  });
}

absl::Status GlooCommunicator::Barrier() {
  if (size_ == 1) return absl::OkStatus();
  Timed timed(stats_.barrier);
  return Run("barrier", [&] {
    gloo::BarrierOptions opts(context_);
    opts.setTag(NextTag());
    gloo::barrier(opts);
  });
}

}  // namespace kvfold
