// tokenizer.json "post_processor" stage: adds the special tokens around an encoded sequence when
// add_special_tokens is set. Supported: TemplateProcessing (single sequences), ByteLevel (nothing
// to do for ids) and Sequence of those; Bert/Roberta processors are UnimplementedError for now.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/json_util.h"

namespace kvfold::tokenizer_impl {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Called only when add_special_tokens is set.
  virtual void AddSpecialTokens(std::vector<int32_t>* ids) const = 0;
  // The first id placed before the sequence, if any: the BOS token.
  virtual std::optional<int32_t> FirstPrefixId() const = 0;
};

// `config` is the non-null "post_processor" value.
absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const Json& config);

// A template with `prefix` ids before the sequence and `suffix` ids after it.
std::unique_ptr<PostProcessor> MakeTemplateProcessor(std::vector<int32_t> prefix,
                                                     std::vector<int32_t> suffix);

}  // namespace kvfold::tokenizer_impl
