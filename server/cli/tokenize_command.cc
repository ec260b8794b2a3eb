// `kvfold tokenize` and `kvfold detokenize`: text on stdin to a JSON array of ids on stdout, and
// back. The tokenizer comes from --tokenizer: a tokenizer.json, a model folder or a .gguf file.
// Text is taken byte for byte (no newline is stripped) and printed the same way.
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/cli/command.h"
#include "server/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, tokenizer, "",
          "A tokenizer.json, a model folder or a .gguf file (empty: the default model's)");
ABSL_FLAG(bool, add_special_tokens, false,
          "tokenize: add the special tokens the tokenizer adds around a sequence (e.g. BOS)");
ABSL_FLAG(bool, skip_special_tokens, false, "detokenize: leave special tokens out of the text");

namespace kvfold::cli {
namespace {

std::string ReadStdin() {
  std::cin >> std::noskipws;
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer() {
  std::string path = absl::GetFlag(FLAGS_tokenizer);
  if (path.empty()) path = DefaultModelPath();
  return Tokenizer::FromFile(path);
}

// "[1,2,3]" -> ids; anything else is InvalidArgument.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_array()) {
    return absl::InvalidArgumentError("stdin must hold a JSON array of token ids, e.g. [1, 2]");
  }
  std::vector<int32_t> ids;
  ids.reserve(json.size());
  for (size_t i = 0; i < json.size(); ++i) {
    const nlohmann::json& item = json[i];
    const bool in_range = item.is_number_integer() &&
                          (item.is_number_unsigned() ? item.get<uint64_t>() <= INT32_MAX
                                                     : item.get<int64_t>() >= INT32_MIN &&
                                                           item.get<int64_t>() <= INT32_MAX);
    if (!in_range) {
      return absl::InvalidArgumentError(
          absl::StrFormat("element %d of the array is not a 32-bit integer token id", i));
    }
    ids.push_back(static_cast<int32_t>(item.get<int64_t>()));
  }
  return ids;
}

int Fail(std::string_view command, const absl::Status& status) {
  std::cerr << "kvfold " << command << ": " << status.message() << "\n";
  return 1;
}

int CheckNoArguments(std::string_view command, const std::vector<std::string>& positional) {
  if (positional.empty()) return 0;
  std::cerr << "kvfold " << command << ": unexpected argument '" << positional[0]
            << "' (input comes on stdin)\n";
  return 2;
}

}  // namespace

int RunTokenize(const std::vector<std::string>& positional) {
  if (int code = CheckNoArguments("tokenize", positional); code != 0) return code;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer();
  if (!tokenizer.ok()) return Fail("tokenize", tokenizer.status());
  absl::StatusOr<std::vector<int32_t>> ids =
      (*tokenizer)->Encode(ReadStdin(), absl::GetFlag(FLAGS_add_special_tokens));
  if (!ids.ok()) return Fail("tokenize", ids.status());
  std::cout << nlohmann::json(*ids).dump() << "\n";
  return 0;
}

int RunDetokenize(const std::vector<std::string>& positional) {
  if (int code = CheckNoArguments("detokenize", positional); code != 0) return code;
  absl::StatusOr<std::vector<int32_t>> ids = ParseIds(ReadStdin());
  if (!ids.ok()) return Fail("detokenize", ids.status());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer();
  if (!tokenizer.ok()) return Fail("detokenize", tokenizer.status());
  absl::StatusOr<std::string> text =
      (*tokenizer)->Decode(*ids, absl::GetFlag(FLAGS_skip_special_tokens));
  if (!text.ok()) return Fail("detokenize", text.status());
  std::cout << *text << std::flush;
  return 0;
}

}  // namespace kvfold::cli
