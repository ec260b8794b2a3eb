#include "server/cli/text_data.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"

namespace kvfold::cli {

absl::StatusOr<std::string> ReadDataText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot read --data %s", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrFormat("error reading %s", path));
  if (text.str().find_first_not_of(" \t\r\n") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrFormat("--data %s holds no text", path));
  }
  return text.str();
}

absl::StatusOr<std::optional<int32_t>> LeadingBos(const Tokenizer& tokenizer) {
  absl::StatusOr<std::vector<int32_t>> with = tokenizer.Encode("a", true);
  if (!with.ok()) return with.status();
  absl::StatusOr<std::vector<int32_t>> without = tokenizer.Encode("a", false);
  if (!without.ok()) return without.status();
  if (with->size() > without->size() && tokenizer.bos_id().has_value() &&
      with->front() == *tokenizer.bos_id()) {
    return tokenizer.bos_id();
  }
  return std::optional<int32_t>();
}

}  // namespace kvfold::cli
