#include "server/cli/command.h"

namespace kvfold::cli {

int RunGenerate(const std::vector<std::string>& positional);
int RunTokenize(const std::vector<std::string>& positional);
int RunDetokenize(const std::vector<std::string>& positional);
int RunCalibrate(const std::vector<std::string>& positional);
int RunEval(const std::vector<std::string>& positional);
int RunServe(const std::vector<std::string>& positional);

const std::vector<Command>& Commands() {
  static const std::vector<Command>* commands = new std::vector<Command>{
      {"serve",
       "serve the model over an OpenAI-compatible HTTP API (--port) until SIGTERM, which drains",
       "serve_command.cc", &RunServe},
      {"generate", "generate text from a prompt, streamed to stdout", "generate_command.cc",
       &RunGenerate},
      {"tokenize", "print the token ids of the text on stdin as a JSON array",
       "tokenize_command.cc", &RunTokenize},
      {"detokenize", "print the text of the JSON array of token ids on stdin",
       "tokenize_command.cc", &RunDetokenize},
      {"eval",
       "perplexity of a model over a text file, tokens/s and KV bytes/token (--max-tokens caps "
       "the tokens scored)",
       "eval_command.cc", &RunEval},
      {"calibrate",
       "write an attention plan (--out) that folds the most KV memory within a perplexity "
       "budget, measured on --data",
       "calibrate_command.cc", &RunCalibrate},
  };
  return *commands;
}

}  // namespace kvfold::cli
