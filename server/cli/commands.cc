#include "server/cli/command.h"

namespace kvfold::cli {

int RunGenerate(const std::vector<std::string>& positional);

const std::vector<Command>& Commands() {
  static const std::vector<Command>* commands = new std::vector<Command>{
      {"generate", "generate text from a prompt, streamed to stdout", "generate_command.cc",
       &RunGenerate},
  };
  return *commands;
}

std::string DefaultModelPath() { return KVFOLD_DEFAULT_MODEL; }

}  // namespace kvfold::cli
