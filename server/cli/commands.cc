#include "server/cli/command.h"

namespace kvfold::cli {

int RunGenerate(const std::vector<std::string>& positional);
int RunTokenize(const std::vector<std::string>& positional);
int RunDetokenize(const std::vector<std::string>& positional);

const std::vector<Command>& Commands() {
  static const std::vector<Command>* commands = new std::vector<Command>{
      {"generate", "generate text from a prompt, streamed to stdout", "generate_command.cc",
       &RunGenerate},
      {"tokenize", "print the token ids of the text on stdin as a JSON array",
       "tokenize_command.cc", &RunTokenize},
      {"detokenize", "print the text of the JSON array of token ids on stdin",
       "tokenize_command.cc", &RunDetokenize},
  };
  return *commands;
}

std::string DefaultModelPath() { return KVFOLD_DEFAULT_MODEL; }

}  // namespace kvfold::cli
