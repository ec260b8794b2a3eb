#include "server/tokenizer/added_vocabulary.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "server/tokenizer/string_map.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::tokenizer_impl {
namespace {

absl::StatusOr<AddedToken> ParseAddedToken(const Json& item, size_t index) {
  const std::string where = absl::StrFormat("added_tokens[%d]", index);
  AddedToken token;
  absl::StatusOr<std::string> content = GetString(item, "content", where);
  if (!content.ok()) return content.status();
  token.content = *std::move(content);
  // The file's id must be there, but HF assigns its own (see AssignIds).
  absl::StatusOr<int64_t> id = GetInt(item, "id", std::nullopt, 0, kMaxTokenId, where);
  if (!id.ok()) return id.status();
  token.id = static_cast<int32_t>(*id);
  for (auto [key, member, fallback] :
       {std::tuple{"special", &token.special, false}, std::tuple{"lstrip", &token.lstrip, false},
        std::tuple{"rstrip", &token.rstrip, false},
        std::tuple{"normalized", &token.normalized, true}}) {
    absl::StatusOr<bool> value = GetBool(item, key, fallback, where);
    if (!value.ok()) return value.status();
    *member = *value;
  }
  absl::StatusOr<bool> single_word = GetBool(item, "single_word", false, where);
  if (!single_word.ok()) return single_word.status();
  if (*single_word) {
    return absl::UnimplementedError(absl::StrFormat(
        "added token \"%s\" sets single_word, which is not supported yet", token.content));
  }
  return token;
}

// HF's AddedVocabulary::add_tokens: an id the vocabulary already gives the content, else one
// past the largest so far (never below the model's vocab size).
absl::Status AssignIds(const Model& model, const Normalizer* normalizer,
                       std::vector<AddedToken>* tokens) {
  const int64_t model_size = static_cast<int64_t>(model.VocabSize());
  StringMap<int32_t> assigned;
  std::optional<int64_t> max_id;
  for (AddedToken& token : *tokens) {
    const int32_t file_id = token.id;
    int64_t id = 0;
    if (const auto it = assigned.find(token.content); it != assigned.end()) {
      id = it->second;
    } else if (std::optional<int32_t> model_id = model.TokenToId(token.content)) {
      id = *model_id;
    } else {
      id = !max_id || (*max_id < model_size && model_size > 0) ? model_size : *max_id + 1;
    }
    if (id > kMaxTokenId) return absl::InvalidArgumentError("added_tokens: too many tokens");
    token.id = static_cast<int32_t>(id);
    assigned.try_emplace(token.content, token.id);
    max_id = std::max(max_id.value_or(id), id);
    if (file_id != token.id) {
      LOG(WARNING) << "added token \"" << token.content << "\" has id " << file_id
                   << " in tokenizer.json; Hugging Face gives it " << token.id << ", as here";
    }
    token.id_string = token.content;
    if (token.normalized && normalizer != nullptr) normalizer->Normalize(&token.id_string);
  }
  return absl::OkStatus();
}

}  // namespace

int32_t TokenMatcher::Child(int32_t node, unsigned char byte) const {
  for (const auto& [b, index] : nodes_[node].children) {
    if (b == byte) return index;
  }
  return -1;
}

void TokenMatcher::Add(std::string_view pattern, const AddedToken& token) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (const char ch : pattern) {
    const auto byte = static_cast<unsigned char>(ch);
    int32_t child = Child(node, byte);
    if (child < 0) {
      child = static_cast<int32_t>(nodes_.size());
      nodes_[node].children.emplace_back(byte, child);
      nodes_.emplace_back();
    }
    node = child;
  }
  if (!nodes_[node].target) nodes_[node].target = Target{token.id, token.lstrip, token.rstrip};
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
}

std::optional<TokenMatcher::Match> TokenMatcher::LongestMatchAt(std::string_view text,
                                                                size_t begin) const {
  std::optional<Match> best;
  int32_t node = 0;
  for (size_t pos = begin; pos < text.size(); ++pos) {
    node = Child(node, static_cast<unsigned char>(text[pos]));
    if (node < 0) break;
    if (nodes_[node].target) best = Match{pos + 1, *nodes_[node].target};
  }
  return best;
}

std::vector<Segment> TokenMatcher::Split(std::string_view text) const {
  std::vector<Segment> segments;
  size_t done = 0;  // text[0, done) is covered by `segments`
  size_t pos = 0;
  while (pos < text.size()) {
    std::optional<Match> match;
    if (first_byte_[static_cast<unsigned char>(text[pos])]) match = LongestMatchAt(text, pos);
    if (!match) {
      ++pos;
      continue;
    }
    size_t begin = pos;
    size_t end = match->end;
    // Whitespace already taken by the previous token's rstrip stays with it.
    if (match->target.lstrip) {
      begin = std::max(TrailingWhitespaceStart(text.substr(0, begin)), done);
    }
    if (match->target.rstrip) end += LeadingWhitespaceLength(text.substr(end));
    if (done < begin) segments.push_back(Segment{done, begin, std::nullopt});
    segments.push_back(Segment{begin, end, match->target.id});
    done = end;
    pos = end;
  }
  if (done < text.size()) segments.push_back(Segment{done, text.size(), std::nullopt});
  return segments;
}

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const Json* added_tokens,
                                                          const Normalizer* normalizer,
                                                          const Model& model) {
  std::vector<AddedToken> tokens;
  if (added_tokens == nullptr) return FromTokens(std::move(tokens), normalizer, model);
  if (!added_tokens->is_array()) {
    return absl::InvalidArgumentError("tokenizer.json \"added_tokens\" must be an array");
  }
  for (size_t i = 0; i < added_tokens->size(); ++i) {
    absl::StatusOr<AddedToken> token = ParseAddedToken((*added_tokens)[i], i);
    if (!token.ok()) return token.status();
    tokens.push_back(*std::move(token));
  }
  return FromTokens(std::move(tokens), normalizer, model);
}

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromTokens(std::vector<AddedToken> tokens,
                                                            const Normalizer* normalizer,
                                                            const Model& model) {
  AddedVocabulary vocabulary;
  for (AddedToken& token : tokens) {
    if (token.content.empty()) continue;  // HF ignores empty tokens
    vocabulary.tokens_.push_back(std::move(token));
  }
  absl::Status status = AssignIds(model, normalizer, &vocabulary.tokens_);
  if (!status.ok()) return status;
  // As HF: special tokens are registered first, and a normalized token's pattern is its
  // content as the normalizer rewrites it.
  for (const bool special : {true, false}) {
    for (const AddedToken& token : vocabulary.tokens_) {
      if (token.special != special) continue;
      if (!token.normalized) {
        vocabulary.raw_.Add(token.content, token);
        continue;
      }
      vocabulary.normalized_.Add(token.id_string, token);
    }
  }
  return vocabulary;
}

}  // namespace kvfold::tokenizer_impl
