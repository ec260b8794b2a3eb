#include "server/cli/tensor_parallel_launch.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "server/cli/attention_plan_setup.h"
#include "server/cluster/cluster_follower.h"
#include "server/cluster/cluster_leader.h"
#include "worker/attention_plan.h"
#include "worker/model_loader.h"
#include "worker/status_macros.h"
#include "worker/step_broadcast.h"
#ifdef KVFOLD_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif
#ifdef KVFOLD_HAVE_NCCL
#include "worker/nccl_communicator.h"
#endif

extern char** environ;

// Internal: set by the single-node leader on the followers it starts.
ABSL_FLAG(int, tp_rank, 0, "(internal) this process's tensor-parallel rank");
ABSL_FLAG(std::string, tp_store, "", "(internal) the tensor-parallel group's rendezvous folder");

namespace kvfold::cli {
namespace {

absl::StatusOr<std::string> SelfExecutable() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot find this executable: ", ec.message()));
  return exe.string();
}

absl::StatusOr<std::string> FreshStoreDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr && *tmp ? tmp : "/tmp", "/kvfold_tp_XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::ErrnoToStatus(errno, "cannot create the tensor-parallel rendezvous folder");
  }
  return pattern;
}

// The host of "HOST:PORT" ("[::1]:PORT" too); empty when malformed.
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return "";
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) return "";
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

// The Cluster service's port when --leader-address names none.
constexpr int kDefaultClusterPort = 50052;

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

// Where this node's rank listens for its peers (see --node-address).
std::string NodeAddress(const std::string& leader_host) {
  std::string address = absl::GetFlag(FLAGS_node_address);
  if (!address.empty()) return address;
  if (IsLoopback(leader_host)) return "127.0.0.1";
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0') return name;
  return leader_host;
}

// What the nodes of one group must agree on: the model's fingerprint and the plan's id.
absl::Status Identify(const std::string& model_path, cluster::GroupShape& shape) {
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<WeightSource> weights, OpenWeights(model_path));
  KVFOLD_ASSIGN_OR_RETURN(shape.model_fingerprint, ModelFingerprint(weights->config(), *weights));
  KVFOLD_ASSIGN_OR_RETURN(AttentionPlan plan, AttentionPlanFromFlags(*weights));
  shape.attention_plan_id = plan.id;
  return absl::OkStatus();
}

std::string Describe(int pid_status) {
  if (WIFEXITED(pid_status)) return absl::StrCat("exited with status ", WEXITSTATUS(pid_status));
  if (WIFSIGNALED(pid_status)) return absl::StrCat("was killed by signal ", WTERMSIG(pid_status));
  return "ended";
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorParallelGroup>> TensorParallelGroup::Join(
    const std::string& command, const std::string& model_path,
    const std::vector<std::string>& follower_flags) {
  std::unique_ptr<TensorParallelGroup> g(new TensorParallelGroup());
  g->size_ = absl::GetFlag(FLAGS_tensor_parallel_size);
  g->rank_ = absl::GetFlag(FLAGS_tp_rank);
  const int timeout = absl::GetFlag(FLAGS_tensor_parallel_timeout);
  g->nnodes_ = absl::GetFlag(FLAGS_nnodes);
  g->timeout_seconds_ = timeout;
  if (g->size_ < 1) return absl::InvalidArgumentError("--tensor-parallel-size must be >= 1");
  if (timeout < 1) return absl::InvalidArgumentError("--tensor-parallel-timeout must be >= 1");
  if (absl::GetFlag(FLAGS_nnodes) < 1) return absl::InvalidArgumentError("--nnodes must be >= 1");
  if (absl::GetFlag(FLAGS_nnodes) > 1) {
    if (g->rank_ != 0 || !absl::GetFlag(FLAGS_tp_store).empty()) {
      return absl::InvalidArgumentError("--tp-rank and --tp-store are for one node only");
    }
    KVFOLD_RETURN_IF_ERROR(g->JoinNodes(model_path, timeout));
    return g;
  }
  if (absl::GetFlag(FLAGS_node_rank) != 0 || !absl::GetFlag(FLAGS_leader_address).empty()) {
    return absl::InvalidArgumentError("--node-rank and --leader-address need --nnodes > 1");
  }
  if (g->rank_ < 0 || g->rank_ >= g->size_) {
    return absl::InvalidArgumentError("--tp-rank is outside the tensor-parallel group");
  }
  if (g->size_ == 1) return g;

  std::string store = absl::GetFlag(FLAGS_tp_store);
  if (g->leader()) {
    if (!store.empty()) return absl::InvalidArgumentError("--tp-store is set by the leader only");
    // A peer that writes to a closed socket gets an error, not SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    absl::StatusOr<std::string> dir = FreshStoreDir();
    if (!dir.ok()) return dir.status();
    store = g->store_dir_ = *dir;
    absl::StatusOr<std::string> exe = SelfExecutable();
    if (!exe.ok()) return exe.status();
    for (int rank = 1; rank < g->size_; ++rank) {
      std::vector<std::string> args = {*exe, command};
      args.insert(args.end(), follower_flags.begin(), follower_flags.end());
      args.push_back(absl::StrCat("--tensor-parallel-size=", g->size_));
      args.push_back(absl::StrCat("--tensor-parallel-timeout=", timeout));
      args.push_back(absl::StrCat("--tp-rank=", rank));
      args.push_back(absl::StrCat("--tp-store=", store));
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      // Followers print nothing on stdout (the leader's output); their errors go to stderr.
      posix_spawn_file_actions_t actions;
      posix_spawn_file_actions_init(&actions);
      posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
      pid_t pid = 0;
      const int err = posix_spawn(&pid, exe->c_str(), &actions, nullptr, argv.data(), environ);
      posix_spawn_file_actions_destroy(&actions);
      if (err != 0) return absl::ErrnoToStatus(err, "cannot start a tensor-parallel follower");
      g->followers_.push_back(pid);
    }
  } else if (store.empty()) {
    return absl::InvalidArgumentError("--tp-rank needs --tp-store (the leader sets both)");
  }
  GlooOptions options;
  options.rank = g->rank_;
  options.size = g->size_;
  options.timeout = std::chrono::seconds(timeout);
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
      GlooCommunicator::CreateWithFileStore(options, store);
  if (!comm.ok()) {
    return absl::Status(comm.status().code(),
                        absl::StrCat("joining the tensor-parallel group (rank ", g->rank_, " of ",
                                     g->size_, "): ", comm.status().message()));
  }
  g->gloo_ = *std::move(comm);
  g->watched_ = std::make_unique<WatchedCommunicator>(*g->gloo_);
  if (g->leader()) {
    g->broadcast_steps_ = std::make_unique<BroadcastStepSink>(*g->watched_);
    g->steps_ = g->broadcast_steps_.get();
  }
  return g;
}

absl::Status TensorParallelGroup::JoinNodes(const std::string& model_path, int timeout) {
  const int nnodes = absl::GetFlag(FLAGS_nnodes);
  const int node = absl::GetFlag(FLAGS_node_rank);
  // LeaderWorkerSet hands out the leader's name without a port; the leader may leave it out.
  std::string leader_address = absl::GetFlag(FLAGS_leader_address);
  if (leader_address.empty() && node == 0) leader_address = "0.0.0.0";
  if (!leader_address.empty() && HostOf(leader_address).empty()) {
    leader_address = absl::StrCat(leader_address, ":", kDefaultClusterPort);
  }
  if (size_ != nnodes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("each node runs one tensor-parallel rank (on --device cuda, on its GPU 0): "
                        "--tensor-parallel-size (%d) must equal --nnodes (%d)",
                        size_, nnodes));
  }
  if (node < 0 || node >= nnodes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--node-rank %d is outside [0, --nnodes %d)", node, nnodes));
  }
  const std::string leader_host = HostOf(leader_address);
  if (leader_host.empty()) {
    return absl::InvalidArgumentError(
        "--nnodes > 1 needs --leader-address HOST[:PORT] on every node but the leader (its "
        "Cluster service)");
  }
  signal(SIGPIPE, SIG_IGN);
  cluster::GroupShape shape;
  shape.nnodes = nnodes;
  shape.tensor_parallel_size = size_;
  shape.timeout_seconds = timeout;
  KVFOLD_RETURN_IF_ERROR(Identify(model_path, shape));
  GlooOptions options;
  options.size = size_;
  options.hostname = NodeAddress(leader_host);
  std::shared_ptr<gloo::rendezvous::Store> store;
  if (node == 0) {
    absl::StatusOr<std::unique_ptr<cluster::ClusterLeader>> leader =
        cluster::ClusterLeader::Start(leader_address, shape);
    if (!leader.ok()) return leader.status();
    cluster_ = *std::move(leader);
    // Tests and scripts with port 0 read the port from this line.
    std::cerr << "kvfold: tensor-parallel leader on " << leader_host << ":" << cluster_->port()
              << ", waiting for " << nnodes - 1 << " node(s)" << std::endl;
    rank_ = 0;
    options.store_prefix = cluster_->store_prefix();
    store = cluster_->gloo_store();
    steps_ = &cluster_->steps();
  } else {
    absl::StatusOr<cluster::Membership> m =
        cluster::JoinCluster(leader_address, node, shape, absl::Seconds(timeout));
    if (!m.ok()) return m.status();
    if (m->world_size != size_) {
      return absl::FailedPreconditionError("the leader's tensor-parallel size differs");
    }
    rank_ = m->rank;
    timeout = timeout_seconds_ = m->timeout_seconds;
    options.store_prefix = m->store_prefix;
    store = m->store;
    step_stream_ = m->steps;
  }
  options.rank = rank_;
  options.timeout = std::chrono::seconds(timeout);
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
      GlooCommunicator::Create(options, std::move(store));
  if (!comm.ok()) {
    return absl::Status(comm.status().code(),
                        absl::StrCat("joining the tensor-parallel group (node ", node, " of ",
                                     nnodes, "): ", comm.status().message()));
  }
  gloo_ = *std::move(comm);
  watched_ = std::make_unique<WatchedCommunicator>(*gloo_);
  return absl::OkStatus();
}

ModelPlacement TensorParallelGroup::PlaceModel(Device device) {
  ModelPlacement placement;
  placement.tp = place();
  placement.device = device;
  placement.cuda_ordinal = local_rank();
  if (device == Device::kCuda && size_ > 1) {
    placement.device_comm = [this](Ops& ops) { return ConnectDevice(ops); };
  }
  return placement;
}

absl::StatusOr<Communicator*> TensorParallelGroup::ConnectDevice(Ops& ops) {
#if defined(KVFOLD_HAVE_NCCL) && defined(KVFOLD_HAVE_CUDA)
  // [0] is 1 when rank 0 made an id (else the followers fail at once instead of timing out in
  // NCCL), then the id's 128 bytes as 32 floats (gloo's broadcast copies bytes unchanged).
  constexpr size_t kIdBytes = 128;
  std::vector<float> message(1 + kIdBytes / sizeof(float), 0.0f);
  absl::Status made;
  if (leader()) {
    absl::StatusOr<NcclId> id = NewNcclId();
    if (!id.ok()) {
      made = id.status();
    } else if (id->bytes.size() != kIdBytes) {
      made = absl::InternalError(absl::StrCat("an NCCL id of ", id->bytes.size(), " bytes"));
    } else {
      message[0] = 1.0f;
      std::memcpy(&message[1], id->bytes.data(), kIdBytes);
    }
  }
  if (absl::Status s = watched_->Broadcast(message.data(), message.size(), 0); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("sending the NCCL id: ", s.message()));
  }
  KVFOLD_RETURN_IF_ERROR(made);
  if (message[0] != 1.0f) {
    return absl::UnavailableError("tensor-parallel rank 0 could not make an NCCL id");
  }
  NcclOptions options;
  options.rank = rank_;
  options.size = size_;
  options.device = local_rank();
  options.timeout = std::chrono::seconds(timeout_seconds_);
  options.stream = CudaOpsStream(ops);
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> nccl = NcclCommunicator::Create(
      options, {std::string(reinterpret_cast<const char*>(&message[1]), kIdBytes)});
  if (!nccl.ok()) {
    return absl::Status(nccl.status().code(),
                        absl::StrCat("joining NCCL (rank ", rank_, " of ", size_, ", GPU ",
                                     local_rank(), "): ", nccl.status().message()));
  }
  nccl_ = *std::move(nccl);
  device_watched_ = std::make_unique<WatchedCommunicator>(*nccl_);
  model_on_nccl_ = true;
  return device_watched_.get();
#else
  (void)ops;
  return absl::FailedPreconditionError(
      "--device cuda with --tensor-parallel-size > 1 needs NCCL: this kvfold was built without "
      "it");
#endif
}

absl::Status TensorParallelGroup::Follow(LlamaModel& model, Ops& ops) {
  if (step_stream_ == nullptr) {
    BroadcastStepSource broadcast(*comm());
    KVFOLD_RETURN_IF_ERROR(FollowSteps(model, ops, broadcast));
  } else {
    KVFOLD_RETURN_IF_ERROR(FollowSteps(model, ops, *step_stream_));
    // Tells the leader this rank has read the finish marker (Finish waits for it), so the
    // leader's exit cannot cut the stream short.
    KVFOLD_RETURN_IF_ERROR(comm()->Barrier());
  }
  finished_ = true;
  CloseDevice();
  return absl::OkStatus();
}

void TensorParallelGroup::CloseDevice() {
  // Every rank gets here at the same point (just past the finish marker), so a teardown that
  // waits on its peers (ncclCommDestroy may) finds them all in it, and the leader then waits for
  // its followers' exit with nothing of NCCL's pending.
  device_watched_.reset();
  nccl_.reset();
}

void TensorParallelGroup::OnFailure(std::function<void(const absl::Status&)> on_failure) {
  if (!leader() || size_ == 1) return;
  // Several sources may report (collectives, the watcher, step streams): the first one wins.
  auto reported = std::make_shared<std::atomic<bool>>(false);
  on_failure_ = [reported, on_failure = std::move(on_failure)](const absl::Status& s) {
    if (!reported->exchange(true)) on_failure(s);
  };
  watched_->SetOnFailure(on_failure_);
  if (device_watched_ != nullptr) device_watched_->SetOnFailure(on_failure_);
  if (cluster_ != nullptr) cluster_->steps().SetOnFailure(on_failure_);
  std::lock_guard<std::mutex> lock(followers_mu_);
  if (!followers_.empty() && !watcher_.joinable()) {
    watcher_ = std::thread([this] { WatchFollowers(); });
  }
}

void TensorParallelGroup::WatchFollowers() {
  while (!finishing_.load()) {
    {
      std::lock_guard<std::mutex> lock(followers_mu_);
      for (size_t i = 0; i < followers_.size(); ++i) {
        if (followers_[i] <= 0) continue;
        int wstatus = 0;
        if (waitpid(followers_[i], &wstatus, WNOHANG) != followers_[i]) continue;
        followers_[i] = 0;
        if (finishing_.load()) continue;
        on_failure_(absl::UnavailableError(
            absl::StrCat("tensor-parallel follower rank ", i + 1, " ", Describe(wstatus))));
        return;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void TensorParallelGroup::StopWatching() {
  finishing_.store(true);
  if (watcher_.joinable()) watcher_.join();
}

absl::Status TensorParallelGroup::Finish() {
  if (!leader() || size_ == 1) return absl::OkStatus();
  StopWatching();
  absl::Status status = steps_->Finish();
  // Several nodes: wait until every follower has read the finish marker (Follow).
  if (status.ok() && cluster_ != nullptr) status = comm()->Barrier();
  if (status.ok()) CloseDevice();  // where the followers close theirs (Follow)
  std::lock_guard<std::mutex> lock(followers_mu_);
  for (pid_t& pid : followers_) {
    int wstatus = 0;
    if (pid > 0 && status.ok() && waitpid(pid, &wstatus, 0) == pid) {
      if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
        status = absl::InternalError("a tensor-parallel follower failed");
      }
      pid = 0;
    }
  }
  finished_ = status.ok();
  return status;
}

std::string TensorParallelGroup::StatsLine() const {
  if (size_ == 1) return "";
  const CommunicatorStats s = gloo_->stats();
  // On GPUs the gloo group carries the steps only; the model's collectives (NCCL) are not timed.
  std::string line = absl::StrFormat("tp: rank %d of %d%s:", rank_, size_,
                                     model_on_nccl_ ? " (gloo, steps; NCCL collectives)" : "");
  const auto add = [&line](const char* name, const CollectiveStats& c, bool last) {
    absl::StrAppendFormat(&line, " %d %s in %.3f s (%.3f ms each)%s", c.calls, name, c.seconds,
                          c.calls > 0 ? 1e3 * c.seconds / c.calls : 0.0, last ? "" : ",");
  };
  add("all-reduces", s.all_reduce, false);
  add("all-gathers", s.all_gather, false);
  add("broadcasts", s.broadcast, true);
  return line;
}

void TensorParallelGroup::Abandon() {
  StopWatching();
  EndFollowers();
}

void TensorParallelGroup::EndFollowers() {
  std::lock_guard<std::mutex> lock(followers_mu_);
  for (pid_t pid : followers_) {
    if (pid <= 0) continue;
    kill(pid, SIGKILL);  // also ends a stopped follower, which SIGTERM would leave pending
    waitpid(pid, nullptr, 0);
  }
  followers_.clear();
}

TensorParallelGroup::~TensorParallelGroup() {
  StopWatching();
  EndFollowers();
  steps_ = nullptr;
  broadcast_steps_.reset();
#ifdef KVFOLD_HAVE_NCCL
  // After a failure a peer may be gone: abort NCCL rather than wait for it in ncclCommDestroy.
  if (nccl_ != nullptr && !finished_) static_cast<NcclCommunicator*>(nccl_.get())->Abort();
#endif
  device_watched_.reset();
  nccl_.reset();
  watched_.reset();
  gloo_.reset();
  cluster_.reset();
  if (!store_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(store_dir_, ec);
  }
}

}  // namespace kvfold::cli
