// tokenizer.json "pre_tokenizer" stage: splits normalized text into the pieces the model
// tokenizes independently. Supported: Metaspace (all prepend schemes, split or not) and
// Sequence. ByteLevel/Split (GPT-2, Llama 3, Qwen) are UnimplementedError for now.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/json_util.h"

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
};

enum class PrependScheme { kAlways, kFirst, kNever };

// Reads Metaspace's prepend scheme: "prepend_scheme", or the older "add_prefix_space" boolean.
absl::StatusOr<PrependScheme> ReadPrependScheme(const Json& config, std::string_view where);

// `config` is the non-null "pre_tokenizer" value.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const Json& config);

}  // namespace kvfold::tokenizer_impl
