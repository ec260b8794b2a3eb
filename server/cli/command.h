// `kvfold <command> [flags]`: each subcommand is a name, a one-line summary, the source file that
// defines its flags (so `--help` shows just those) and a function to run.
#pragma once

#include <string>
#include <string_view>
#include <vector>

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

// The default model, SmolLM2-135M-Instruct (Q4_1 GGUF), as scripts/setup.sh fetches it.
inline constexpr char kDefaultModelName[] = "SmolLM2-135M-Instruct.Q4_1.gguf";

// Where the default model lives: $KVFOLD_CACHE_DIR/<kDefaultModelName>, else
// ~/.cache/kvfold/<kDefaultModelName>.
std::string DefaultModelFile();

// The model every command uses when --model is not given: DefaultModelFile() when it exists,
// else the bundled stories260K (KVFOLD_FALLBACK_MODEL), with a one-line notice on stderr.
std::string DefaultModelPath();

}  // namespace kvfold::cli
