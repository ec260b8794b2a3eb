// The kvfold binary: dispatches to a subcommand (server/cli/).
#include "glog/logging.h"
#include "server/cli/command.h"

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  return kvfold::cli::Main(argc, argv);
}
