#include "server/cli/tensor_parallel_launch.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "worker/step_broadcast.h"

extern char** environ;

// --tensor-parallel-size and --tensor-parallel-timeout are defined by the commands that take them
// (so their --help lists them). Internal: set by the leader on the followers it starts.
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

}  // namespace

absl::StatusOr<std::unique_ptr<TensorParallelGroup>> TensorParallelGroup::Join(
    const std::string& command, const std::vector<std::string>& follower_flags) {
  std::unique_ptr<TensorParallelGroup> g(new TensorParallelGroup());
  g->size_ = absl::GetFlag(FLAGS_tensor_parallel_size);
  g->rank_ = absl::GetFlag(FLAGS_tp_rank);
  const int timeout = absl::GetFlag(FLAGS_tensor_parallel_timeout);
  if (g->size_ < 1) return absl::InvalidArgumentError("--tensor-parallel-size must be >= 1");
  if (timeout < 1) return absl::InvalidArgumentError("--tensor-parallel-timeout must be >= 1");
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
  g->comm_ = *std::move(comm);
  return g;
}

absl::Status TensorParallelGroup::Finish() {
  if (!leader() || size_ == 1) return absl::OkStatus();
  absl::Status status = BroadcastStop(*comm_);
  for (pid_t& pid : followers_) {
    int wstatus = 0;
    if (status.ok() && waitpid(pid, &wstatus, 0) == pid) {
      if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
        status = absl::InternalError("a tensor-parallel follower failed");
      }
      pid = 0;
    }
  }
  EndFollowers();
  return status;
}

void TensorParallelGroup::EndFollowers() {
  for (pid_t pid : followers_) {
    if (pid <= 0) continue;
    kill(pid, SIGKILL);  // also ends a stopped follower, which SIGTERM would leave pending
    waitpid(pid, nullptr, 0);
  }
  followers_.clear();
}

TensorParallelGroup::~TensorParallelGroup() {
  EndFollowers();
  comm_.reset();
  if (!store_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(store_dir_, ec);
  }
}

}  // namespace kvfold::cli
