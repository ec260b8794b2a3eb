// Runs the built `kvfold` binary as a user's shell would and captures what it prints, for the e2e
// tests. Each run has its own scratch files: ctest runs test cases as parallel processes.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace kvfold::testing {

struct CliResult {
  bool exited = false;  // false: killed by a signal (a CHECK failure aborts)
  int exit_code = -1;   // -1 unless exited
  std::string out, err;
};

struct CliOptions {
  std::vector<std::pair<std::string, std::string>> env;  // NAME=value for this run only
  std::string stdin_text;                                // empty: stdin is /dev/null
};

// `s` single-quoted for the shell.
inline std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The file's bytes; empty when it cannot be read.
inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `program args...` through the shell with `options`; returns its exit code and output.
inline CliResult RunCommand(const std::string& program, const std::vector<std::string>& args,
                            const CliOptions& options = {}) {
  static std::atomic<int> calls{0};
  const std::string stem = ::testing::TempDir() + "/kvfold_cli_" + std::to_string(getpid()) + "_" +
                           std::to_string(calls++);
  const std::string in = stem + ".stdin", out = stem + ".stdout", err = stem + ".stderr";
  std::string cmd;
  for (const auto& [name, value] : options.env) cmd.append(name + "=" + ShellQuote(value) + " ");
  cmd.append(ShellQuote(program));
  for (const std::string& a : args) cmd.append(" ").append(ShellQuote(a));
  cmd.append(" >").append(ShellQuote(out)).append(" 2>").append(ShellQuote(err));
  if (options.stdin_text.empty()) {
    cmd.append(" </dev/null");
  } else {
    std::ofstream(in, std::ios::binary) << options.stdin_text;
    cmd.append(" <").append(ShellQuote(in));
  }
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exited = WIFEXITED(status);
  r.exit_code = r.exited ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  for (const std::string& path : {in, out, err}) std::remove(path.c_str());
  return r;
}

// Runs the `kvfold` binary of this build.
inline CliResult RunKvfold(const std::vector<std::string>& args, const CliOptions& options = {}) {
  return RunCommand(BinaryPath("kvfold"), args, options);
}

}  // namespace kvfold::testing
