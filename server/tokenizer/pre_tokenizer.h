// tokenizer.json "pre_tokenizer" stage: splits normalized text into the pieces the model
// tokenizes independently. Supported: Metaspace (all prepend schemes, split or not), Split (regex
// or string, every behaviour, invert), Digits, ByteLevel and Sequence. Known regexes (GPT-2,
// Llama 3, Qwen 2) are matched by hand (split_patterns.h), others by PCRE2.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/json_util.h"
#include "server/tokenizer/split_patterns.h"

namespace kvfold::tokenizer_impl {

struct Piece {
  std::string text;
  // Whether the piece begins at offset 0 of the original input (Metaspace's "first" scheme).
  bool at_origin = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Rewrites `pieces` in place; empty pieces are dropped, as HF drops empty splits.
  virtual void PreTokenize(std::vector<Piece>* pieces) const = 0;
  // Whether the pieces are to be read through ByteLevel's bytes-to-characters alphabet. The
  // mapping is left to the model, so ByteLevel must be the last step of a Sequence.
  virtual bool MapsToByteLevel() const { return false; }
};

enum class PrependScheme { kAlways, kFirst, kNever };

// Reads Metaspace's prepend scheme: "prepend_scheme", or the older "add_prefix_space" boolean.
absl::StatusOr<PrependScheme> ReadPrependScheme(const Json& config, std::string_view where);

// `config` is the non-null "pre_tokenizer" value.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const Json& config);

// Factories of split_pre_tokenizers.cc, from JSON and, for GGUF vocabularies, directly.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeSplit(const Json& config);
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeDigits(const Json& config);
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeByteLevel(const Json& config);
std::unique_ptr<PreTokenizer> MakeByteLevelPreTokenizer(bool add_prefix_space, bool use_regex);
std::unique_ptr<PreTokenizer> MakeKnownSplit(KnownPattern pattern);  // Isolated, not inverted
std::unique_ptr<PreTokenizer> MakeIndividualDigits();
// Runs `steps` in order (GGUF vocabularies build their pipelines directly).
std::unique_ptr<PreTokenizer> MakePreTokenizerSequence(
    std::vector<std::unique_ptr<PreTokenizer>> steps);

}  // namespace kvfold::tokenizer_impl
