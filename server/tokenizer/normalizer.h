// tokenizer.json "normalizer" stage: rewrites each piece of input text before the model sees it.
// Supported: Sequence, Prepend, Replace (string pattern), NFC (ICU). Others (NFKC, Lowercase,
// ...) are UnimplementedError until a model family needs them.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/tokenizer/json_util.h"

namespace kvfold::tokenizer_impl {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Normalize(std::string* text) const = 0;
};

// `config` is the non-null "normalizer" value.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const Json& config);

// SentencePiece's whitespace handling as Llama 2's tokenizer.json spells it: Prepend "▁" (when
// `add_space_prefix`), then Replace " " with "▁".
std::unique_ptr<Normalizer> MakeSentencePieceNormalizer(bool add_space_prefix);

// The {"String": "..."} form of a Replace pattern (shared with the Replace decoder).
absl::StatusOr<std::string> ReplacePatternString(const Json& config, std::string_view where);

}  // namespace kvfold::tokenizer_impl
