#include <cstring>
#include <iostream>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "server/cli/command.h"

namespace kvfold::cli {
namespace {

void PrintUsage(std::ostream& os) {
  os << "kvfold: an LLM serving engine for Llama-family models with folded attention.\n\n"
        "usage: kvfold <command> [flags]\n\ncommands:\n";
  for (const Command& c : Commands()) os << "  " << c.name << "\t" << c.summary << "\n";
  os << "\n`kvfold <command> --help` lists a command's flags.\n";
}

// Abseil flag names cannot contain '-'; accept `--max-tokens` as `--max_tokens`.
std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--") break;
    if (!absl::StartsWith(a, "--")) continue;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t j = 2; j < end; ++j) {
      if (a[j] == '-') a[j] = '_';
    }
  }
  return args;
}

}  // namespace

int Main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    PrintUsage(std::cout);
    return 0;
  }
  const Command* command = nullptr;
  for (const Command& c : Commands()) {
    if (c.name == argv[1]) command = &c;
  }
  if (command == nullptr) {
    std::cerr << "kvfold: unknown command '" << argv[1] << "'\n\n";
    PrintUsage(std::cerr);
    return 2;
  }
  absl::SetProgramUsageMessage(
      absl::StrCat("kvfold ", std::string(command->name), ": ", std::string(command->summary)));
  absl::FlagsUsageConfig usage;
  const std::string flags_file(command->flags_file);
  usage.contains_help_flags = [flags_file](absl::string_view path) {
    return absl::EndsWith(path, flags_file) || absl::EndsWith(path, "common_flags.cc") ||
           absl::EndsWith(path, "engine_flags.cc") ||
           ((flags_file == "serve_command.cc" || flags_file == "generate_command.cc") &&
            absl::EndsWith(path, "tensor_parallel_flags.cc"));
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);

  std::vector<std::string> args = NormalizeFlagNames(argc - 1, argv + 1);
  args[0] = absl::StrCat("kvfold ", std::string(command->name));
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  std::vector<char*> rest =
      absl::ParseCommandLine(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  return command->run(std::vector<std::string>(rest.begin() + 1, rest.end()));
}

}  // namespace kvfold::cli
