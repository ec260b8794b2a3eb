// `kvfold <command> [flags]`: each subcommand is a name, a one-line summary, the source file that
// defines its flags (so `--help` shows just those) and a function to run.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "server/cli/default_model.h"

namespace kvfold::cli {

struct Command {
  std::string_view name;
  std::string_view summary;
  std::string_view flags_file;  // e.g. "generate_command.cc"
  int (*run)(const std::vector<std::string>& positional);
};

const std::vector<Command>& Commands();

// Runs `kvfold` with argv; returns the process exit code.
int Main(int argc, char** argv);

}  // namespace kvfold::cli
