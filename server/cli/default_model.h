// The model every command falls back to when --model is not given. Its own small file (and
// library, kvfold_cli_base) so tests can find the default model without linking the front ends.
#pragma once

#include <string>

namespace kvfold::cli {

// The default model, SmolLM2-135M-Instruct (Q4_1 GGUF), as scripts/setup.sh fetches it.
inline constexpr char kDefaultModelName[] = "SmolLM2-135M-Instruct.Q4_1.gguf";

// Where the default model lives: $KVFOLD_CACHE_DIR/<kDefaultModelName>, else
// ~/.cache/kvfold/<kDefaultModelName>.
std::string DefaultModelFile();

// The model every command uses when --model is not given: DefaultModelFile() when it exists,
// else the bundled stories260K (KVFOLD_FALLBACK_MODEL), with a one-line notice on stderr.
std::string DefaultModelPath();

}  // namespace kvfold::cli
