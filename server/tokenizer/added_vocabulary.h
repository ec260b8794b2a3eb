// tokenizer.json "added_tokens": tokens matched in the input text before the model runs, as HF's
// AddedVocabulary does. Tokens with normalized=false are found in the raw text; the text between
// them is normalized and then searched for normalized=true tokens (whose patterns are normalized
// the same way). Matching is leftmost-longest; lstrip/rstrip absorb neighbouring whitespace.
// Ids are assigned as HF assigns them on load, not read from the file: the model's id where the
// vocab has the content, else the next id after the vocab and the added tokens so far.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/json_util.h"
#include "server/tokenizer/model.h"
#include "server/tokenizer/normalizer.h"

namespace kvfold::tokenizer_impl {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  // What HF's id_to_token gives, and so what decoding sees: the content, as the normalizer
  // rewrites it for normalized tokens.
  std::string id_string;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
};

// A byte range [begin, end) of the searched text; `id` is set where an added token matched.
struct Segment {
  size_t begin = 0;
  size_t end = 0;
  std::optional<int32_t> id;
};

// Finds the added tokens of one kind (raw or normalized) in a text.
class TokenMatcher {
 public:
  // Registers `pattern` for `token`; the first token registered for a pattern wins.
  void Add(std::string_view pattern, const AddedToken& token);
  // Splits `text` into matched tokens and the non-empty runs between them.
  std::vector<Segment> Split(std::string_view text) const;

 private:
  struct Target {
    int32_t id;
    bool lstrip;
    bool rstrip;
  };
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // byte -> node index
    std::optional<Target> target;                             // set where a pattern ends
  };
  struct Match {
    size_t end;
    Target target;
  };
  int32_t Child(int32_t node, unsigned char byte) const;
  std::optional<Match> LongestMatchAt(std::string_view text, size_t begin) const;

  std::vector<Node> nodes_{Node{}};
  bool first_byte_[256] = {};  // bytes some pattern starts with: a cheap filter
};

class AddedVocabulary {
 public:
  // `added_tokens` is the "added_tokens" array (or null); `normalizer` may be null.
  static absl::StatusOr<AddedVocabulary> FromJson(const Json* added_tokens,
                                                  const Normalizer* normalizer, const Model& model);
  // `tokens` in file order, ids as the file has them (reassigned as HF does).
  static absl::StatusOr<AddedVocabulary> FromTokens(std::vector<AddedToken> tokens,
                                                    const Normalizer* normalizer,
                                                    const Model& model);

  // In file order; a later token with the same id (a repeated content) overrides an earlier one.
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  std::vector<Segment> SplitRaw(std::string_view text) const { return raw_.Split(text); }
  std::vector<Segment> SplitNormalized(std::string_view text) const {
    return normalized_.Split(text);
  }

 private:
  std::vector<AddedToken> tokens_;
  TokenMatcher raw_;
  TokenMatcher normalized_;
};

}  // namespace kvfold::tokenizer_impl
