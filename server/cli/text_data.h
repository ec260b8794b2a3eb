// Text files that commands score or calibrate on (`eval`, `calibrate`): reading them and the BOS
// a window starts with.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/tokenizer/tokenizer.h"

namespace kvfold::cli {

// The bytes of --data `path`; an error when it cannot be read or holds only whitespace.
absl::StatusOr<std::string> ReadDataText(const std::string& path);

// The BOS id when the tokenizer's post-processor puts one in front of a text (Llama 2 and
// stories260K do; SmolLM2 does not), as `generate` gets it with add_special_tokens.
absl::StatusOr<std::optional<int32_t>> LeadingBos(const Tokenizer& tokenizer);

}  // namespace kvfold::cli
